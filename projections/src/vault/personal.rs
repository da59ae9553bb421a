//! Which stored fields are personal, and how a payload carries them sealed.
//!
//! A sealed payload keeps its other fields as they are and carries the personal ones in one
//! object: `"sealed": {"fields": ["name", "email"], "data": "<base64 nonce + ciphertext>"}`.
//! The field names are not personal and stay readable, so a payload whose key is gone still
//! says what it held. The ciphertext is bound to the client, the event type and the position
//! of the fields in the payload, so it cannot be replayed into another event.

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::DataKey;

/// The key under which a payload carries its sealed fields.
pub const SEALED: &str = "sealed";

/// What an erased field reads as, for the code that needs a value of the field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blank {
    /// A required text field: the empty string.
    Text,
    /// An optional field: absent.
    Absent,
    /// A list: empty.
    List,
}

/// A personal field: its JSON name, what it reads as once erased, and the field whose
/// presence makes it personal (`None`: always).
type Field = (&'static str, Blank, Option<&'static str>);

/// The personal fields of each event type (by their JSON names), and of the aggregate's
/// snapshot (`client`). Free text an operator or a mail server wrote may quote the person, so
/// it is personal too. Everything else (amounts, scores, times, ids, statuses) is not.
/// A manual score's factors quote the operator's reason, so they are sealed with it; an
/// automatic score's factors (the policy's words) stay readable.
fn personal_fields(kind: &str) -> &'static [Field] {
    use Blank::{Absent, List, Text};
    match kind {
        "UserCreated" | "UserUpdated" => &[
            ("name", Text, None),
            ("email", Text, None),
            ("externalId", Absent, None),
        ],
        "OrderCancelled" => &[("reason", Absent, None)],
        "UserScored" => &[("reason", Absent, None), ("factors", List, Some("reason"))],
        "EmailGenerated" => &[
            ("subject", Text, None),
            ("preheader", Text, None),
            ("text", Text, None),
            ("html", Text, None),
        ],
        "EmailRejected" | "EmailCancelled" => &[("reason", Text, None)],
        "EmailFailed" => &[("reply", Text, None)],
        "AddressSuppressed" => &[("address", Text, None), ("reason", Text, None)],
        SNAPSHOT => &[
            ("name", Text, None),
            ("email", Text, None),
            ("external_id", Absent, None),
            ("suppressed_address", Absent, None),
        ],
        _ => &[],
    }
}

/// Whether `value` holds something (not null, not an empty text or list).
fn holds(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// The fields of `kind` that are personal in `body`.
fn personal_in<'a>(
    kind: &str,
    body: &'a Map<String, Value>,
) -> impl Iterator<Item = &'static Field> + 'a {
    personal_fields(kind)
        .iter()
        .filter(move |(_, _, with)| with.is_none_or(|other| body.get(other).is_some_and(holds)))
}

/// The kind under which a client's snapshot is sealed.
pub const SNAPSHOT: &str = "snapshot";

/// Whether events of `event_type` carry personal fields.
pub fn is_personal(event_type: &str) -> bool {
    !personal_fields(event_type).is_empty()
}

/// Whether `event` has personal data to seal (an automatic score or a cancellation without a
/// reason has none), decided without serializing it.
pub fn carries_personal_data(event: &domain::client::ClientEvent) -> bool {
    use domain::client::ClientEvent;
    match event {
        ClientEvent::UserScored(e) => e.reason.is_some(),
        ClientEvent::OrderCancelled(e) => e.reason.is_some(),
        other => is_personal(&cqrs_es::DomainEvent::event_type(other)),
    }
}

/// Every event type with personal fields.
pub const PERSONAL_EVENT_TYPES: &[&str] = &[
    "UserCreated",
    "UserUpdated",
    "OrderCancelled",
    "UserScored",
    "EmailGenerated",
    "EmailRejected",
    "EmailCancelled",
    "EmailFailed",
    "AddressSuppressed",
];

fn aad(client: &str, kind: &str) -> Vec<u8> {
    format!("client:{client}:{kind}").into_bytes()
}

/// The object holding a payload's fields: an event's body under its type's tag
/// (`{"UserCreated": {...}}`), or the snapshot itself.
fn body<'a>(kind: &str, payload: &'a mut Value) -> Option<&'a mut Map<String, Value>> {
    let body = if kind == SNAPSHOT {
        payload
    } else {
        payload.get_mut(kind)?
    };
    body.as_object_mut()
}

/// Whether `payload` of `kind` holds personal fields in the clear.
pub fn has_plain_personal_data(kind: &str, payload: &Value) -> bool {
    let body = if kind == SNAPSHOT {
        Some(payload)
    } else {
        payload.get(kind)
    };
    let Some(body) = body.and_then(Value::as_object) else {
        return false;
    };
    personal_in(kind, body).any(|(name, _, _)| body.get(*name).is_some_and(holds))
}

/// The names of every personal field of `kinds` (for queries that look for them).
pub fn field_names(kinds: &[&str]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = kinds
        .iter()
        .flat_map(|kind| {
            personal_fields(kind)
                .iter()
                .filter(|(_, _, with)| with.is_none())
                .map(|(name, _, _)| *name)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A condition on `events` (with `$1` bound to [`PERSONAL_EVENT_TYPES`] and `$2` to their
/// [`field_names`]) that holds for rows whose payload has personal fields in the clear (or
/// empty ones: check with [`has_plain_personal_data`]).
pub const EVENT_IN_THE_CLEAR: &str = "event_type = any($1)
    and jsonb_strip_nulls(payload -> event_type) ?| $2
    and not (payload -> event_type ? 'sealed')";

/// The same for `snapshots`, with `$3` bound to the snapshot's [`field_names`].
pub const SNAPSHOT_IN_THE_CLEAR: &str =
    "jsonb_strip_nulls(payload) ?| $3 and not (payload ? 'sealed')";

/// Moves the personal fields of `payload` (an event of type `kind`, or a [`SNAPSHOT`]) into
/// its sealed object. A payload with none, or already sealed, is left as it is.
///
/// # Errors
/// Serializing the fields failed.
pub fn seal(key: &DataKey, client: &str, kind: &str, payload: &mut Value) -> anyhow::Result<()> {
    let fields = personal_fields(kind);
    let Some(body) = body(kind, payload) else {
        return Ok(());
    };
    if fields.is_empty() || body.contains_key(SEALED) {
        return Ok(());
    }
    let names: Vec<&str> = personal_in(kind, body)
        .map(|(name, _, _)| *name)
        .filter(|name| body.get(*name).is_some_and(holds))
        .collect();
    let mut plain = Map::new();
    for name in names {
        if let Some(value) = body.remove(name) {
            plain.insert(name.to_owned(), value);
        }
    }
    if plain.is_empty() {
        return Ok(());
    }
    let names: Vec<Value> = plain.keys().map(|k| Value::from(k.as_str())).collect();
    let bytes = serde_json::to_vec(&plain).context("serializing personal fields")?;
    let sealed = key.seal(&aad(client, kind), &bytes);
    body.insert(
        SEALED.to_owned(),
        serde_json::json!({ "fields": names, "data": STANDARD.encode(sealed) }),
    );
    Ok(())
}

/// What opening a payload found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Opened {
    /// The personal fields it held whose key is gone (empty: nothing was erased).
    pub erased: Vec<String>,
}

/// Puts the sealed fields of `payload` back in the clear with `key`; with no key (the client
/// was erased) they come back blank (an empty string, or absent) and are listed as erased.
/// A payload that was never sealed is left as it is.
///
/// # Errors
/// The sealed object is malformed, or does not open with `key` (another key, or altered).
pub fn open(
    key: Option<&DataKey>,
    client: &str,
    kind: &str,
    payload: &mut Value,
) -> anyhow::Result<Opened> {
    let Some(body) = body(kind, payload) else {
        return Ok(Opened::default());
    };
    let Some(sealed) = body.remove(SEALED) else {
        return Ok(Opened::default());
    };
    let names: Vec<String> = sealed
        .get("fields")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(key) = key else {
        for (name, blank, _) in personal_fields(kind) {
            if names.iter().any(|n| n == name) {
                match blank {
                    Blank::Text => body.insert((*name).to_owned(), Value::from("")),
                    Blank::List => body.insert((*name).to_owned(), Value::Array(vec![])),
                    Blank::Absent => None,
                };
            }
        }
        return Ok(Opened { erased: names });
    };
    let data = sealed
        .get("data")
        .and_then(Value::as_str)
        .context("a sealed payload without its data")?;
    let bytes = STANDARD
        .decode(data)
        .context("a sealed payload whose data is not base64")?;
    let plain = key
        .open(&aad(client, kind), &bytes)
        .with_context(|| format!("opening the personal fields of a {kind} of user {client}"))?;
    let plain: Map<String, Value> =
        serde_json::from_slice(&plain).context("reading opened personal fields")?;
    body.extend(plain);
    Ok(Opened::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{MasterKey, Vault};

    fn key() -> DataKey {
        let vault = Vault::new(&MasterKey::new([1; 32]));
        vault
            .unwrap("u", &vault.wrap("u", &[2; 32]).wrapped)
            .unwrap()
    }

    #[test]
    fn personal_fields_are_sealed_bound_to_their_place_and_blank_once_the_key_is_gone() {
        let key = key();
        let original = serde_json::json!({"UserCreated": {
            "userId": "u", "name": "Zelda Quist", "email": "zelda@example.org",
            "preferredCategories": ["Denim"], "createdAt": "2026-01-01T00:00:00Z"
        }});
        let mut payload = original.clone();
        seal(&key, "u", "UserCreated", &mut payload).unwrap();
        let text = payload.to_string();
        assert!(
            !text.contains("Zelda") && !text.contains("zelda@"),
            "{text}"
        );
        assert!(text.contains("Denim"));
        assert_eq!(
            payload["UserCreated"]["sealed"]["fields"],
            serde_json::json!(["email", "name"])
        );
        assert!(!has_plain_personal_data("UserCreated", &payload));
        assert!(has_plain_personal_data("UserCreated", &original));

        // Sealing twice changes nothing; opening gives back the original.
        let mut again = payload.clone();
        seal(&key, "u", "UserCreated", &mut again).unwrap();
        assert_eq!(again, payload);
        let mut opened = payload.clone();
        assert_eq!(
            open(Some(&key), "u", "UserCreated", &mut opened).unwrap(),
            Opened::default()
        );
        assert_eq!(opened, original);

        // Moved to another client or event type, it does not open.
        assert!(open(Some(&key), "v", "UserCreated", &mut payload.clone()).is_err());
        let mut moved = serde_json::json!({"UserUpdated": payload["UserCreated"].clone()});
        assert!(open(Some(&key), "u", "UserUpdated", &mut moved).is_err());

        // No key: blank, and listed.
        let mut erased = payload.clone();
        let found = open(None, "u", "UserCreated", &mut erased).unwrap();
        assert_eq!(found.erased, ["email", "name"]);
        assert_eq!(erased["UserCreated"]["name"], "");
        assert_eq!(erased["UserCreated"]["preferredCategories"][0], "Denim");
        assert!(erased["UserCreated"].get("externalId").is_none());

        // Events without personal fields, and plain payloads, pass through.
        let mut order = serde_json::json!({"OrderPlaced": {"orderId": "o"}});
        seal(&key, "u", "OrderPlaced", &mut order).unwrap();
        assert_eq!(order, serde_json::json!({"OrderPlaced": {"orderId": "o"}}));
        let mut plain = original.clone();
        assert_eq!(
            open(None, "u", "UserCreated", &mut plain).unwrap(),
            Opened::default()
        );
        assert_eq!(plain, original);
        for kind in PERSONAL_EVENT_TYPES {
            assert!(is_personal(kind));
        }
        assert!(!is_personal("OrderPlaced") && !is_personal("UserErased"));

        // A manual score's factors quote its reason: sealed with it; an automatic one's not.
        let manual = serde_json::json!({"UserScored": {"score": 5, "reason": "Zelda asked",
            "factors": [{"detail": "Set by hand: Zelda asked"}]}});
        let mut sealed = manual.clone();
        seal(&key, "u", "UserScored", &mut sealed).unwrap();
        assert!(!sealed.to_string().contains("Zelda"), "{sealed}");
        let mut erased = sealed.clone();
        assert_eq!(
            open(None, "u", "UserScored", &mut erased).unwrap().erased,
            ["factors", "reason"]
        );
        assert_eq!(
            erased,
            serde_json::json!({"UserScored": {"score": 5, "factors": []}})
        );
        let automatic = serde_json::json!({"UserScored": {"score": 5, "reason": null,
            "factors": [{"detail": "No order for 90 days"}]}});
        let mut kept = automatic.clone();
        seal(&key, "u", "UserScored", &mut kept).unwrap();
        assert_eq!(kept, automatic);
        assert!(!has_plain_personal_data("UserScored", &automatic));
        assert!(has_plain_personal_data("UserScored", &manual));
        assert_eq!(field_names(&["UserScored"]), ["reason"]);
    }
}
