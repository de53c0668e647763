# valori-node on `scratch`: the binary built on the host, the shared libraries it links, a
# passwd entry for its non-root user, and its data volume. e2e/build-images.sh assembles the
# context; nothing is pulled.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    VALORI_HTTP_ADDR=0.0.0.0 \
    VALORI_HTTP_PORT=3000 \
    VALORI_GRPC_PORT=50051 \
    VALORI_DATA_DIR=/data \
    VALORI_LOG=info
VOLUME /data
EXPOSE 3000 50051
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/valori-node", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/valori-node"]
