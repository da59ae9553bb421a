//! Value types that are parsed once, at the edge, and are valid from then on.
//!
//! Each `parse` names the field it failed on with the public (GraphQL) field name, so the API
//! can report `VALIDATION` errors without translating.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value a caller sent that cannot be accepted; `field` is the input field's public name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending input field, as the caller named it (`email`, `amount`, ...).
    pub field: String,
    /// What is wrong with it, in words a caller can act on.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A client's display name: trimmed, 1..=200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    /// Longest accepted name, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a name for the input field `name`.
    ///
    /// # Errors
    /// Empty after trimming, longer than 200 characters, or containing control characters.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(ValidationError::new("name", "must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address: trimmed, one `@`, a plausible local part and a dotted domain, at most
/// 254 characters. The domain is lower-cased (it is case-insensitive); the local part is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address for the input field `email`.
    ///
    /// # Errors
    /// Anything that is not a single plausible address.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid =
            |why: &str| ValidationError::new("email", format!("not a valid email address: {why}"));
        let address = raw.trim();
        if address.is_empty() {
            return Err(ValidationError::new("email", "must not be empty"));
        }
        if address.len() > 254 {
            return Err(invalid("longer than 254 characters"));
        }
        let (local, domain) = address
            .split_once('@')
            .ok_or_else(|| invalid("missing '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before '@' must be 1 to 64 characters"));
        }
        if domain.contains('@') {
            return Err(invalid("more than one '@'"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid(
                "the part before '@' has characters an address cannot have",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(invalid(
                "the domain must be a dotted name such as example.com",
            ));
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in integer cents, never negative. Outside it is a decimal with at most
/// two fractional digits (`"12.30"`); there is no binary float anywhere on its path.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// The largest amount accepted: ten million in the currency unit, far above any order.
    pub const MAX_CENTS: i64 = 1_000_000_000;

    /// Money from cents.
    ///
    /// # Errors
    /// Negative or above [`Money::MAX_CENTS`]; `field` names the input.
    pub fn from_cents(cents: i64, field: &str) -> Result<Self, ValidationError> {
        if cents < 0 {
            return Err(ValidationError::new(field, "must not be negative"));
        }
        if cents > Self::MAX_CENTS {
            return Err(ValidationError::new(field, "is implausibly large"));
        }
        Ok(Self(cents))
    }

    /// Parses a decimal such as `12`, `12.3` or `12.30` for the input `field`.
    ///
    /// # Errors
    /// Not a plain decimal, negative, more than two fractional digits, or too large.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        let mut text = raw.trim();
        if let Some(rest) = text.strip_prefix('-') {
            if rest.chars().any(|c| c.is_ascii_digit() && c != '0') {
                return Err(ValidationError::new(field, "must not be negative"));
            }
            // "-0" and "-0.00" are zero.
            text = rest;
        }
        let bad = || ValidationError::new(field, format!("not a decimal amount: {text:?}"));
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if frac.len() > 2 {
            return Err(ValidationError::new(
                field,
                "must have at most two decimal places",
            ));
        }
        if whole.len() > 12 {
            return Err(ValidationError::new(field, "is implausibly large"));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        Self::from_cents(whole * 100 + frac, field)
    }

    /// The amount in cents.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// The mean of `total` over `count` parts, rounded half away from zero to the cent.
    pub fn average(total: Self, count: u32) -> Self {
        if count == 0 {
            return Self::ZERO;
        }
        let count = i64::from(count);
        Self((total.0 * 2 + count) / (count * 2))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// An engagement score, 0..=100 (lower = more at risk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(u8);

impl Score {
    /// Parses a score for the input `field`.
    ///
    /// # Errors
    /// Outside 0..=100.
    pub fn parse(value: i64, field: &str) -> Result<Self, ValidationError> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .map(Self)
            .ok_or_else(|| ValidationError::new(field, "must be between 0 and 100"))
    }

    /// A score from a value already known to be in range, clamping anything outside.
    pub fn clamped(value: i64) -> Self {
        // The clamp makes the narrowing cast lossless.
        Self(value.clamp(0, 100) as u8)
    }

    /// The score as a number.
    pub fn value(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client's preferred categories: each trimmed and non-empty, duplicates (ignoring case)
/// dropped keeping the first spelling, at most 20 of at most 60 characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Categories(Vec<String>);

impl Categories {
    /// Most categories a client can have.
    pub const MAX_COUNT: usize = 20;
    /// Longest category name, in characters.
    pub const MAX_CHARS: usize = 60;

    /// Parses a list for the input `field`.
    ///
    /// # Errors
    /// An empty or over-long entry, a control character, or too many entries.
    pub fn parse<S: AsRef<str>>(raw: &[S], field: &str) -> Result<Self, ValidationError> {
        let mut out: Vec<String> = Vec::new();
        for entry in raw {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                return Err(ValidationError::new(field, "entries must not be empty"));
            }
            if entry.chars().count() > Self::MAX_CHARS || entry.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "entries must be at most {} printable characters",
                        Self::MAX_CHARS
                    ),
                ));
            }
            if !out.iter().any(|c| c.eq_ignore_ascii_case(entry)) {
                out.push(entry.to_owned());
            }
        }
        if out.len() > Self::MAX_COUNT {
            return Err(ValidationError::new(
                field,
                format!("at most {} categories", Self::MAX_COUNT),
            ));
        }
        Ok(Self(out))
    }

    /// The categories, in the order given.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The caller's idempotency key for an order: 1..=100 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(String);

impl OrderId {
    /// Parses an order id for the input `orderId`.
    ///
    /// # Errors
    /// Empty, longer than 100 characters, or with control characters.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let id = raw.trim();
        if id.is_empty() || id.chars().count() > 100 || id.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "orderId",
                "must be 1 to 100 printable characters",
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id a client has in the retailer's own systems (`externalId`): 1..=200 printable
/// characters, compared exactly after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    /// Parses an external id for the input `externalId`.
    ///
    /// # Errors
    /// Empty, longer than 200 characters, or with control characters.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let id = raw.trim();
        if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "externalId",
                "must be 1 to 200 printable characters",
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert_eq!(UserName::parse("   ").unwrap_err().field, "name");
        assert!(UserName::parse(&"x".repeat(200)).is_ok());
        assert!(UserName::parse(&"é".repeat(201)).is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn emails_must_be_plausible_and_name_their_field() {
        assert_eq!(
            EmailAddress::parse(" Ada@Example.COM ").unwrap().as_str(),
            "Ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a@b@c.com",
            "a b@c.com",
            "ada@-x.com",
            "ada@x..com",
            ".a@x.com",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad:?}");
        }
    }

    #[test]
    fn money_parses_decimals_exactly() {
        assert_eq!(Money::parse("12", "amount").unwrap().cents(), 1200);
        assert_eq!(Money::parse("12.3", "amount").unwrap().cents(), 1230);
        assert_eq!(Money::parse("0.07", "amount").unwrap().cents(), 7);
        assert_eq!(Money::parse(".5", "amount").unwrap().cents(), 50);
        assert_eq!(Money::parse("-0", "amount").unwrap().cents(), 0);
        assert_eq!(
            Money::parse("-1.00", "amount").unwrap_err().message,
            "must not be negative"
        );
        assert_eq!(Money::parse("1.234", "amount").unwrap_err().field, "amount");
        for bad in ["", ".", "1e3", "NaN", "1,5", "0x10", "99999999999999"] {
            assert!(Money::parse(bad, "amount").is_err(), "{bad:?}");
        }
        assert_eq!(Money::from_cents(-1, "amount").unwrap_err().field, "amount");
        assert_eq!(
            Money::parse("1234.5", "amount").unwrap().to_string(),
            "1234.50"
        );
    }

    #[test]
    fn averages_round_half_away_from_zero_to_the_cent() {
        let total = Money::from_cents(1001, "x").unwrap();
        assert_eq!(Money::average(total, 2).cents(), 501);
        assert_eq!(Money::average(total, 3).cents(), 334);
        assert_eq!(Money::average(total, 0).cents(), 0);
    }

    #[test]
    fn scores_are_bounded() {
        assert_eq!(Score::parse(100, "score").unwrap().value(), 100);
        assert_eq!(Score::parse(101, "score").unwrap_err().field, "score");
        assert!(Score::parse(-1, "score").is_err());
        assert_eq!(Score::clamped(130).value(), 100);
    }

    #[test]
    fn categories_are_trimmed_deduplicated_and_bounded() {
        let cats =
            Categories::parse(&[" Shoes", "shoes ", "Denim"], "preferredCategories").unwrap();
        assert_eq!(cats.as_slice(), ["Shoes", "Denim"]);
        assert!(Categories::parse(&[" "], "preferredCategories").is_err());
        let many: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
        assert_eq!(
            Categories::parse(&many, "preferredCategories")
                .unwrap_err()
                .field,
            "preferredCategories"
        );
    }
}
