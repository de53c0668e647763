# valori-operator on `scratch`: the binary built on the host, the shared libraries it links and
# a passwd entry for its non-root user (the chart runs it as 65532 with a read-only root).
FROM scratch
COPY rootfs/ /
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    VALORI_OPERATOR_METRICS_ADDR=0.0.0.0:8080 \
    VALORI_OPERATOR_LOG_JSON=true
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/valori-operator"]
