//! Traces over OTLP, off unless configured by the standard OpenTelemetry variables:
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`: where to send them
//!   (gRPC, for example `http://jaeger-collector.tracing:4317`); unset, nothing is exported.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: only `grpc` is built in; anything else is refused at start.
//! - `OTEL_SDK_DISABLED=true` turns it off whatever else is set.
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` describe the process (default service
//!   name `vexa-operator`); `OTEL_BSP_*` tune the batch exporter.
//!
//! Two kinds of spans go out. The operator's own (a reconcile of a live Dispatch, joined to
//! that run's trace) come from `tracing` through [`Telemetry::layer`]. A run's lifecycle
//! ([`crate::controllers::dispatch::trace`]) is assembled after the fact, with ids and times
//! of its own, and handed to [`report`]. Both share one batch exporter.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanEvents, SpanLinks,
    SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use vexa_core::trace::TraceParent;

use crate::controllers::dispatch::trace::RunTrace;

/// Which `tracing` spans are exported: the operator's own at info (a reconcile of a live
/// Dispatch), never a library's; independent of `RUST_LOG`, which filters the log.
pub const SPAN_FILTER: &str = "info,kube=warn,tower=warn,hyper=warn,h2=warn,tonic=warn";

/// The service name when `OTEL_SERVICE_NAME` does not give one.
pub const SERVICE_NAME: &str = "vexa-operator";

/// Where and how to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The OTLP gRPC endpoint.
    pub endpoint: String,
}

impl Settings {
    /// From the standard variables (`get` reads one); `None`: tracing is off.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(endpoint) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "grpc".into());
        if protocol.trim() != "grpc" {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?}: the operator exports traces over OTLP/gRPC only; \
                 set it to grpc and point the endpoint at the collector's gRPC port (usually 4317)"
            ));
        }
        let endpoint = endpoint.trim().to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "the OTLP endpoint {endpoint:?} is not a URL; write it as http://host:4317 (or https://)"
            ));
        }
        Ok(Some(Self { endpoint }))
    }
}

/// Tracing is on: the provider, which flushes what is queued when shut down.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// The exporter's queue for lifecycle spans, once tracing is installed.
static REPORTED: OnceLock<Arc<BatchSpanProcessor>> = OnceLock::new();

impl Telemetry {
    /// Starts the exporter (it connects lazily: a collector that is down costs dropped spans,
    /// never a failed reconcile) and makes it the process's tracer provider.
    pub fn install(settings: &Settings) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let resource = resource.build();
        let mut batch = BatchSpanProcessor::builder(exporter).build();
        batch.set_resource(&resource);
        let batch = Arc::new(batch);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Shared(batch.clone()))
            .with_resource(resource)
            .build();
        if REPORTED.set(batch).is_err() {
            anyhow::bail!("tracing was installed twice in this process");
        }
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Self { provider })
    }

    /// The `tracing` layer that turns the operator's spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SERVICE_NAME))
    }

    /// Sends what is queued now (evals, benchmarks).
    pub fn flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Sends what is queued and stops the exporter.
    pub fn shutdown(self) -> OTelSdkResult {
        self.provider.shutdown()
    }
}

/// Whether spans are exported at all.
pub fn enabled() -> bool {
    REPORTED.get().is_some()
}

/// Queues a run's lifecycle spans for export; nothing when tracing is off.
pub fn report(run: &RunTrace) {
    let Some(batch) = REPORTED.get() else { return };
    let trace_id = TraceId::from_bytes(run.context.trace_id);
    let scope = InstrumentationScope::builder(SERVICE_NAME).build();
    for span in &run.spans {
        let parent = span.parent.map_or(SpanId::INVALID, SpanId::from_bytes);
        batch.on_end(SpanData {
            span_context: SpanContext::new(
                trace_id,
                SpanId::from_bytes(span.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent,
            // The root's parent is the caller's span (the CLI's, a pipeline's).
            parent_span_is_remote: span.parent.is_some() && span.span_id == run.context.span_id,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(span.name),
            start_time: span.start,
            end_time: span.end,
            attributes: span
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone()))
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        });
    }
}

/// Makes `span` (a `tracing` span) a child of the run whose context is `run`: a reconcile of
/// a live Dispatch shows in that run's trace.
pub fn join(span: &tracing::Span, run: &TraceParent) {
    let flags = if run.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(run.trace_id),
        SpanId::from_bytes(run.span_id),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The provider's processor and [`report`]'s, one queue and one exporter.
#[derive(Debug)]
struct Shared(Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    // The resource was given to the processor before it was shared.
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rstest::rstest;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert_eq!(
            on,
            Ok(Some(Settings {
                endpoint: "http://collector:4317".into()
            }))
        );
        let disabled = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(disabled, Ok(None));
    }

    #[test]
    fn the_traces_endpoint_wins() {
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ]);
        assert_eq!(on.unwrap().unwrap().endpoint, "http://traces:4317");
    }

    #[rstest]
    #[case::http_protobuf(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")], "gRPC only")]
    #[case::no_scheme(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")], "not a URL")]
    fn what_cannot_work_is_refused_with_what_to_do(
        #[case] vars: &[(&str, &str)],
        #[case] says: &str,
    ) {
        let e = settings(vars).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}
