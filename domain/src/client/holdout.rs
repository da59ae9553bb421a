//! The global holdout: a random share of clients (`HOLDOUT_PERCENT`) is never emailed, so
//! that emailing can be compared with not emailing.
//!
//! A client's group is decided once, at creation, from its id and a salt generated once and
//! kept in the database, and recorded on `UserCreated`: the same client always lands in the
//! same group, on every instance and after a rebuild, and a later change of the setting moves
//! nobody already assigned. Clients created before the holdout existed were all eligible for
//! emails; a one-off command records them as `TREATMENT` (`GroupAssigned`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which side of the comparison a client is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EngagementGroup {
    /// Emailed when at risk.
    #[default]
    Treatment,
    /// Never emailed; their triggers are recorded for the comparison.
    Holdout,
}

impl EngagementGroup {
    /// The spelling stored in the read models and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Treatment => "TREATMENT",
            Self::Holdout => "HOLDOUT",
        }
    }
}

impl std::str::FromStr for EngagementGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TREATMENT" => Ok(Self::Treatment),
            "HOLDOUT" => Ok(Self::Holdout),
            other => Err(format!("unknown engagement group {other:?}")),
        }
    }
}

/// The largest holdout share accepted.
pub const MAX_HOLDOUT_PERCENT: u8 = 50;

/// How new clients are assigned: the salt and the share held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdout {
    /// Generated once per database; not secret.
    pub salt: Uuid,
    /// Percent of new clients held out (0 turns the holdout off; at most 50).
    pub percent: u8,
}

impl Default for Holdout {
    /// No holdout.
    fn default() -> Self {
        Self {
            salt: Uuid::nil(),
            percent: 0,
        }
    }
}

impl Holdout {
    /// The group of the client `user_id`: a uniform bucket in 0..10,000 from a hash of the salt
    /// and the id (SHA-1 through UUID v5), held out below `percent` x 100.
    pub fn assign(&self, user_id: Uuid) -> EngagementGroup {
        if self.percent == 0 {
            return EngagementGroup::Treatment;
        }
        let hashed = Uuid::new_v5(&self.salt, user_id.as_bytes());
        // The first 48 bits are pure hash (v5 sets version and variant bits after them).
        let bytes = hashed.as_bytes();
        let mut first = [0u8; 8];
        first[2..].copy_from_slice(&bytes[..6]);
        let bucket = u64::from_be_bytes(first) % 10_000;
        if bucket < u64::from(self.percent.min(MAX_HOLDOUT_PERCENT)) * 100 {
            EngagementGroup::Holdout
        } else {
            EngagementGroup::Treatment
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_held_out_is_the_setting_and_an_assignment_never_changes() {
        let holdout = Holdout {
            salt: Uuid::from_u128(0x5eed),
            percent: 10,
        };
        let ids: Vec<Uuid> = (0..10_000u128)
            .map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect();
        let held = ids
            .iter()
            .filter(|id| holdout.assign(**id) == EngagementGroup::Holdout)
            .count();
        let share = held as f64 / ids.len() as f64;
        assert!((share - 0.10).abs() <= 0.01, "{share}");
        // Deterministic: the same salt and id always give the same group.
        for id in &ids[..100] {
            assert_eq!(holdout.assign(*id), holdout.assign(*id));
        }
        // Another salt shuffles who is held out, not how many.
        let other = Holdout {
            salt: Uuid::from_u128(0xbeef),
            ..holdout
        };
        let moved = ids
            .iter()
            .filter(|id| holdout.assign(**id) != other.assign(**id))
            .count();
        assert!(moved > 1000, "{moved}");
        for percent in [0, 50] {
            let h = Holdout { percent, ..holdout };
            let held = ids
                .iter()
                .filter(|id| h.assign(**id) == EngagementGroup::Holdout)
                .count() as f64
                / 10_000.0;
            assert!(
                (held - f64::from(percent) / 100.0).abs() <= 0.01,
                "{percent}: {held}"
            );
        }
    }
}
