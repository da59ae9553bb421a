//! What an answer read, for the response cache (`http::response_cache`): the clients it shows
//! and the respects in which any client's change could change it. Resolvers note it as they
//! read.

use std::collections::HashSet;
use std::sync::Mutex;

use uuid::Uuid;

/// Respects in which a client's rows in the views can change, as a bit set.
pub mod aspect {
    /// Created, deleted, erased, unsubscribed: which clients lists hold at all.
    pub const MEMBERSHIP: u8 = 1;
    /// Name, email, categories, external id, group, suppressed address.
    pub const PROFILE: u8 = 1 << 1;
    /// Order count, spend, last order.
    pub const ORDERS: u8 = 1 << 2;
    /// Score, band, at risk.
    pub const SCORE: u8 = 1 << 3;
    /// Any of the client's emails.
    pub const EMAILS: u8 = 1 << 4;
    /// Every respect.
    pub const ALL: u8 = u8::MAX;

    /// What an event of type `event_type` may change in the views (an unknown type: all).
    pub fn of_event(event_type: &str) -> u8 {
        match event_type {
            "UserCreated" => MEMBERSHIP | PROFILE | ORDERS | SCORE,
            "UserUpdated" => PROFILE | ORDERS,
            "OrderPlaced" | "OrderCancelled" => ORDERS,
            "UserScored" => SCORE,
            "EmailGenerated" | "EmailApproved" | "EmailRejected" | "EmailCancelled"
            | "EmailSent" | "EmailFailed" | "EmailBounced" | "EmailComplained" => EMAILS,
            "AddressSuppressed" => PROFILE | EMAILS,
            "GroupAssigned" => PROFILE,
            "UserUnsubscribed" | "UserDeleted" | "UserErased" => {
                MEMBERSHIP | PROFILE | SCORE | EMAILS
            }
            _ => ALL,
        }
    }
}

/// What an answer read: the clients it shows, and the respects of any client that could
/// change it.
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    clients: HashSet<Uuid>,
    aspects: u8,
}

impl Dependencies {
    /// Showing `clients`, changed by any client's change in `aspects`.
    pub fn of(clients: impl IntoIterator<Item = Uuid>, aspects: u8) -> Self {
        Self {
            clients: clients.into_iter().collect(),
            aspects,
        }
    }

    /// Whether a change of `clients`, in `aspects` in all, may change the answer.
    pub fn touched_by(&self, clients: &HashSet<Uuid>, aspects: u8) -> bool {
        self.aspects & aspects != 0
            || if self.clients.len() < clients.len() {
                self.clients.iter().any(|c| clients.contains(c))
            } else {
                clients.iter().any(|c| self.clients.contains(c))
            }
    }

    /// Roughly the bytes it takes.
    pub fn size(&self) -> usize {
        self.clients.len() * 16
    }
}

/// Collects what a request's resolvers read.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Dependencies>);

impl Recorder {
    fn with(&self, f: impl FnOnce(&mut Dependencies)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// The answer shows client `id` (or would, were they there).
    pub fn client(&self, id: Uuid) {
        self.with(|d| {
            d.clients.insert(id);
        });
    }

    /// The answer shows these clients.
    pub fn clients(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.with(|d| d.clients.extend(ids));
    }

    /// The answer changes when any client changes in these respects ([`aspect`]).
    pub fn aspects(&self, aspects: u8) {
        self.with(|d| d.aspects |= aspects);
    }

    /// What was recorded.
    pub fn take(&self) -> Dependencies {
        let mut out = Dependencies::default();
        self.with(|d| out = std::mem::take(d));
        out
    }
}
