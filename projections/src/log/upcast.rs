//! The one place older event versions become current ones.
//!
//! Every reader of the log (the command path through cqrs-es, the projections, the audit
//! queries) passes stored events through [`upcast`] before deserializing them, so an event
//! written by an older build reads as the current schema everywhere.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde_json::Value;

/// Upcasters for cqrs-es's event store, one per (event type, version) that changed.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "OrderPlaced",
        "1.0",
        Box::new(order_placed_v0_to_v1),
    ))]
}

/// Brings a stored payload of `event_type` at `event_version` to the current schema.
pub fn upcast(event_type: &str, event_version: &str, payload: Value) -> Value {
    let mut payload = payload;
    for upcaster in upcasters() {
        if upcaster.can_upcast(event_type, event_version) {
            let serialized = cqrs_es::persist::SerializedEvent::new(
                String::new(),
                0,
                String::new(),
                event_type.to_owned(),
                event_version.to_owned(),
                payload,
                Value::Null,
            );
            payload = upcaster.upcast(serialized).payload;
        }
    }
    payload
}

/// `OrderPlaced` 0.x (before 1.0) carried the amount as a decimal string `amount` and no
/// `categories`; 1.0 carries integer `amountCents` and a (possibly empty) list.
fn order_placed_v0_to_v1(mut payload: Value) -> Value {
    if let Some(body) = payload
        .get_mut("OrderPlaced")
        .and_then(Value::as_object_mut)
    {
        if !body.contains_key("amountCents") {
            let cents = body
                .get("amount")
                .and_then(|a| {
                    a.as_str()
                        .map(str::to_owned)
                        .or_else(|| a.as_f64().map(|f| format!("{f:.2}")))
                })
                .and_then(|a| domain::values::Money::parse(&a, "amount").ok())
                .map_or(0, domain::values::Money::cents);
            body.insert("amountCents".into(), Value::from(cents));
            body.remove("amount");
        }
        body.entry("categories")
            .or_insert_with(|| Value::Array(vec![]));
    }
    payload
}
