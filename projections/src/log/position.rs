//! A place in the global event log.

use serde::{Deserialize, Serialize};

/// A place in the log, in the order readers consume it: by writing transaction, then by
/// position within the log. Comparing two positions compares that order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The writing transaction's id (`xid8`, as a number).
    pub transaction_id: i64,
    /// The event's `global_position`.
    pub global_position: i64,
}

impl LogPosition {
    /// Before every event.
    pub const START: Self = Self {
        transaction_id: 0,
        global_position: 0,
    };
}
