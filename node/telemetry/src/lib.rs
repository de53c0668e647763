//! # valori-telemetry
//!
//! Logs and traces, the same for every Valori binary (the node and the operator): `tracing` to
//! stderr (as text, or one JSON object a line for log collectors), and OpenTelemetry spans
//! exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard OTLP
//! variables configure the exporter).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    service: &'static str,
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber for the binary `service` (it names the traces) with
    /// `filter` (tracing `EnvFilter` syntax; `info` when it does not parse), logging JSON lines
    /// when `json`.
    pub fn init(service: &'static str, filter: &str, json: bool) -> anyhow::Result<Telemetry> {
        // The OTLP exporter's HTTP client looks the TLS provider up.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let filter = tracing_subscriber::EnvFilter::try_new(filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let text = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
        let json = json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr)
        });
        let provider = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service)
                            .build(),
                    )
                    .build(),
            )
        } else {
            None
        };
        let otel = provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
        tracing_subscriber::registry()
            .with(filter)
            .with(text)
            .with(json)
            .with(otel)
            .try_init()?;
        Ok(Telemetry { service, provider })
    }

    /// Flushes and stops the exporter (spans still buffered are sent).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("{}: flushing traces: {e}", self.service);
            }
        }
    }
}
