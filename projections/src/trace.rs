//! Traces that cross the log: a W3C `traceparent` is stored with each event (in its metadata)
//! and with each job it causes, and the work done for that event or job continues the trace.
//! So one trace shows a request, its command, the process manager's decision, the email job,
//! the LLM call and the send, though they run in different tasks, at different times, perhaps
//! on different instances.
//!
//! This module speaks only the OpenTelemetry API: when no OpenTelemetry layer is installed
//! (tracing is off), spans carry no trace context, nothing is stored, and following a stored
//! `traceparent` does nothing.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The metadata key events keep it under.
pub const METADATA_KEY: &str = "traceparent";

/// A span's context as a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it has a
/// valid one.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| format_traceparent(&span_context))
}

/// The current span's `traceparent`, if any.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// Parses a W3C `traceparent` (version 00; other versions are read by their first four
/// fields, as the specification asks). `None` for anything malformed or all-zero.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2)
        || version == "ff"
        || !hex(trace_id, 32)
        || !hex(span_id, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 0x01),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Makes `span` continue the trace of `traceparent` (a stored or incoming one); does nothing
/// when there is none, or it is malformed, or tracing is off.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(context) = traceparent.and_then(parse_traceparent) else {
        return;
    };
    let parent = opentelemetry::Context::new().with_remote_span_context(context);
    // Fails only when the span is disabled or already started a trace of its own.
    let _ = span.set_parent(parent);
}

/// The trace id of a `traceparent`, for logs.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    parse_traceparent(traceparent).map(|c| format!("{:032x}", c.trace_id()))
}

/// The `traceparent` kept in an event's metadata (a JSON object), if any.
pub fn from_metadata(metadata: &serde_json::Value) -> Option<&str> {
    metadata.get(METADATA_KEY)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_malformed_ones_are_refused() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_traceparent(value).expect("valid");
        assert_eq!(format_traceparent(&context), value);
        assert_eq!(
            trace_id_of(value).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version with more fields is read by its first four.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn with_tracing_off_nothing_is_stored_and_following_does_nothing() {
        let span = tracing::info_span!("work");
        assert_eq!(traceparent_of(&span), None);
        follow(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
    }
}
