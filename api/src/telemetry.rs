//! Logs and traces: one `tracing` subscriber for every subcommand.
//!
//! Logs go to standard error, as text (colour only on a terminal) or as one JSON object per
//! line; a request's lines carry its `request_id` and `trace_id` (fields of its span).
//!
//! Traces are exported with OpenTelemetry over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and are off otherwise: no exporter is
//! built and one line says so. The standard `OTEL_*` variables apply (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, ...). Only this
//! service's own spans are exported, never those of the libraries beneath it (the exporter's
//! own gRPC calls would otherwise trace themselves).

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The running telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (at most a few seconds).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "exporting the last traces failed");
            }
        }
    }
}

/// Where traces go, from the environment (`None`: tracing is off).
fn endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// The OTLP protocol asked for; only gRPC is built in.
fn check_protocol() -> anyhow::Result<()> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(value) = std::env::var(name) {
            let value = value.trim();
            if !value.is_empty() && value != "grpc" {
                anyhow::bail!(
                    "{name}={value:?}: only \"grpc\" (OTLP/gRPC, usually port 4317) is supported"
                );
            }
        }
    }
    Ok(())
}

/// Installs logging (and tracing, when configured) for the whole process.
///
/// # Errors
/// The OpenTelemetry settings are wrong (an unsupported protocol, a bad endpoint).
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<_> + Send + Sync> = match format {
        // One JSON object per line, for log shippers; with the fields of the current span
        // (a request's id and trace id).
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        // Colour only on a terminal: a file or a pipe gets plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    let endpoint = endpoint();
    let (provider, traces) = match &endpoint {
        Some(_) => {
            check_protocol()?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP/gRPC exporter")?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(
                    std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "engagement".into()),
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("engagement");
            // This service's own spans and events, at info and above. A dynamic filter: its
            // interest in every callsite is "sometimes", so every span is filtered afresh.
            // With "always" (a static filter), tracing-subscriber skips the filters for the
            // next span after a `tracing::enabled!` check that every filter refused (sqlx
            // makes one per statement when any directive asks for debug), and that span
            // would be lost to the traces.
            let ours = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
                let target = meta.target();
                *meta.level() <= tracing::Level::INFO
                    && ["api", "engagement", "projections"].iter().any(|name| {
                        target == *name
                            || target
                                .strip_prefix(name)
                                .is_some_and(|r| r.starts_with("::"))
                    })
            });
            // What each span costs matters: no source locations, no thread names (an
            // allocation a span), no busy/idle timings (two clock reads at every poll), no
            // OpenTelemetry context made current at every poll (nothing here reads it:
            // `projections::trace` asks the span itself).
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(ours);
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    // The traces' layer sits next to the registry, the logs' above it.
    tracing_subscriber::registry()
        .with(traces)
        .with(logs.with_filter(filter))
        .try_init()
        .context("installing the log subscriber")?;
    match &endpoint {
        Some(endpoint) => {
            tracing::info!(%endpoint, "exporting OpenTelemetry traces over OTLP/gRPC")
        }
        None => {
            tracing::info!("OpenTelemetry traces are off (OTEL_EXPORTER_OTLP_ENDPOINT is not set)")
        }
    }
    Ok(Telemetry { provider })
}
