//! The `Client` aggregate: decides commands against the client's state and applies events.
//!
//! `decide` is a pure function from (state, command, services) to events; `apply` folds an
//! event into the state. Every command is idempotent: against a state that already holds its
//! effect it decides no events and succeeds, which is what makes retries safe.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{
    CancelOrder, ClientAction, ClientCommand, CreateUser, PlaceOrder, PlaceOrders, RecordEmail,
    SetEngagementScore, UpdateUser,
};
use super::delivery::{
    AddressSuppressed, DeliveryAction, EmailApproved, EmailBounced, EmailCancelled,
    EmailComplained, EmailDelivery, EmailFailed, EmailRejected, EmailSent,
};
use super::errors::ClientError;
use super::events::{
    ClientEvent, EmailGenerated, OrderCancelled, OrderPlaced, OrderSummary, ScoreCause,
    UserCreated, UserDeleted, UserErased, UserScored, UserUnsubscribed, UserUpdated,
};
use super::holdout::{EngagementGroup, Holdout};
use super::status::EmailStatus;
use crate::scoring::{Band, CadenceV2, ClientFacts, ScoreFactor, ScoringPolicy};
use crate::values::{Money, ValidationError};

/// How far in the future a client-supplied timestamp may lie (clock skew between systems).
pub const FUTURE_TOLERANCE_MINUTES: i64 = 5;

/// The longest reason an erasure may record.
pub const MAX_ERASE_REASON_CHARS: usize = 200;

/// What the aggregate needs from outside: the scoring policy and the email rules.
#[derive(Debug, Clone)]
pub struct ClientServices {
    /// The policy used for every automatic score.
    pub policy: Arc<dyn ScoringPolicy>,
    /// Minimum time between two emails to one client.
    pub email_cooldown: Duration,
    /// Which new clients are held out of emails (none by default).
    pub holdout: Holdout,
}

impl Default for ClientServices {
    fn default() -> Self {
        Self {
            policy: Arc::new(CadenceV2),
            email_cooldown: Duration::days(7),
            holdout: Holdout::default(),
        }
    }
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Not created yet.
    #[default]
    New,
    /// Created, receiving emails.
    Active,
    /// Created, opted out of emails.
    Unsubscribed,
    /// Deleted: every further command is refused.
    Deleted,
    /// Personal data erased: every further command is refused.
    Erased,
}

/// The last score recorded for the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreState {
    /// Score 0..=100.
    pub score: u8,
    /// Band.
    pub band: Band,
    /// Threshold in force when it was scored.
    pub threshold: u8,
    /// Policy name.
    pub policy: String,
    /// Reasons.
    pub factors: Vec<ScoreFactor>,
    /// Moment described.
    pub as_of: DateTime<Utc>,
    /// When time alone would next change it.
    pub next_change_at: Option<DateTime<Utc>>,
}

/// One recorded order, as far as a later cancellation needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Amount in cents.
    pub amount_cents: i64,
    /// When the client placed it.
    pub placed_at: DateTime<Utc>,
    /// Cancelled or refunded: it no longer counts.
    pub cancelled: bool,
}

/// A client of the retailer, as its events tell it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Client {
    id: Option<Uuid>,
    lifecycle: Lifecycle,
    name: String,
    email: String,
    preferred_categories: Vec<String>,
    #[serde(default)]
    external_id: Option<String>,
    orders: OrderSummary,
    /// Every order id recorded, cancelled ones included (placing one again is a duplicate).
    order_ids: BTreeSet<String>,
    /// The recorded orders by id.
    #[serde(default)]
    order_lines: BTreeMap<String, OrderLine>,
    /// The last order date given by an older system (creation or a correction), which no
    /// recorded order stands for.
    #[serde(default)]
    history_last_order_at: Option<DateTime<Utc>>,
    email_ids: BTreeSet<Uuid>,
    /// Where each email written since delivery existed stands.
    #[serde(default)]
    deliveries: BTreeMap<Uuid, EmailDelivery>,
    /// The address that must not be written to (undeliverable, or suppressed by hand); it
    /// stops mattering when the client's address changes.
    #[serde(default)]
    suppressed_address: Option<String>,
    /// Treatment or holdout, once assigned (at creation, or by the one-off backfill).
    #[serde(default)]
    group: Option<EngagementGroup>,
    last_email_at: Option<DateTime<Utc>>,
    score: Option<ScoreState>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

impl Aggregate for Client {
    const TYPE: &'static str = "client";
    type Command = ClientCommand;
    type Event = ClientEvent;
    type Error = ClientError;
    type Services = ClientServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.updated_at = Some(event.occurred_at());
        match event {
            ClientEvent::UserCreated(e) => {
                self.created_at = Some(e.client_since());
                self.id = Some(e.user_id);
                self.lifecycle = Lifecycle::Active;
                self.name = e.name;
                self.email = e.email;
                self.preferred_categories = e.preferred_categories;
                self.history_last_order_at = e.orders.last_order_at;
                self.orders = e.orders;
                self.external_id = e.external_id;
                self.group = e.group;
            }
            ClientEvent::GroupAssigned(e) => {
                self.group.get_or_insert(e.group);
            }
            ClientEvent::UserUpdated(e) => {
                self.name = e.name;
                self.email = e.email;
                self.preferred_categories = e.preferred_categories;
                if e.changed.iter().any(|c| c == "lastOrderDate") {
                    self.history_last_order_at = e.orders.last_order_at;
                }
                self.orders = e.orders;
                if e.external_id.is_some() {
                    self.external_id = e.external_id;
                }
            }
            ClientEvent::OrderPlaced(e) => {
                self.order_lines.insert(
                    e.order_id.clone(),
                    OrderLine {
                        amount_cents: e.amount_cents,
                        placed_at: e.placed_at,
                        cancelled: false,
                    },
                );
                self.order_ids.insert(e.order_id);
                self.orders = e.orders;
            }
            ClientEvent::OrderCancelled(e) => {
                if let Some(line) = self.order_lines.get_mut(&e.order_id) {
                    line.cancelled = true;
                }
                self.orders = e.orders;
            }
            ClientEvent::UserScored(e) => {
                self.score = Some(ScoreState {
                    score: e.score,
                    band: e.band,
                    threshold: e.threshold,
                    policy: e.policy,
                    factors: e.factors,
                    as_of: e.as_of,
                    next_change_at: e.next_change_at,
                });
            }
            ClientEvent::EmailGenerated(e) => {
                self.email_ids.insert(e.email_id);
                self.deliveries
                    .entry(e.email_id)
                    .or_insert_with(|| EmailDelivery::written(e.delivery));
                self.last_email_at = Some(
                    self.last_email_at
                        .map_or(e.generated_at, |t| t.max(e.generated_at)),
                );
            }
            ClientEvent::EmailApproved(e) => {
                self.advance(e.email_id, EmailStatus::Generated, true);
            }
            ClientEvent::EmailRejected(e) => self.advance(e.email_id, EmailStatus::Rejected, false),
            ClientEvent::EmailCancelled(e) => {
                self.advance(e.email_id, EmailStatus::Cancelled, false);
            }
            ClientEvent::EmailSent(e) => {
                // What left is a fact even after a decision not to send it.
                if let Some(current) = self.deliveries.get_mut(&e.email_id) {
                    if stage(current) < 3 && current.status != EmailStatus::Sent {
                        *current = EmailDelivery {
                            status: EmailStatus::Sent,
                            queued: false,
                        };
                    }
                }
            }
            ClientEvent::EmailFailed(e) => self.advance(e.email_id, EmailStatus::Failed, false),
            ClientEvent::EmailBounced(e) => {
                if e.permanent {
                    self.advance(e.email_id, EmailStatus::Bounced, false);
                }
            }
            ClientEvent::EmailComplained(e) => {
                self.advance(e.email_id, EmailStatus::Complained, false);
            }
            ClientEvent::AddressSuppressed(e) => self.suppressed_address = Some(e.address),
            ClientEvent::UserUnsubscribed(_) => self.lifecycle = Lifecycle::Unsubscribed,
            ClientEvent::UserDeleted(_) => self.lifecycle = Lifecycle::Deleted,
            ClientEvent::UserErased(_) => {
                self.lifecycle = Lifecycle::Erased;
                self.name.clear();
                self.email.clear();
                self.external_id = None;
                self.suppressed_address = None;
            }
        }
    }
}

impl Client {
    /// Decides which events `command` leads to, without changing `self`.
    ///
    /// # Errors
    /// The command is not allowed in this state (see [`ClientError`]).
    pub fn decide(
        &self,
        command: ClientCommand,
        services: &ClientServices,
    ) -> Result<Vec<ClientEvent>, ClientError> {
        let now = command.now;
        match (self.lifecycle, &command.action) {
            (Lifecycle::New, ClientAction::CreateUser(_)) => {}
            (Lifecycle::New, _) => return Err(ClientError::NotFound),
            (Lifecycle::Erased, ClientAction::EraseUser { .. }) => return Ok(vec![]),
            (Lifecycle::Erased, _) => return Err(ClientError::Erased),
            (_, ClientAction::EraseUser { reason }) => {
                let reason = reason.trim();
                if reason.is_empty()
                    || reason.chars().count() > MAX_ERASE_REASON_CHARS
                    || reason.chars().any(char::is_control)
                {
                    return Err(ValidationError::new(
                        "reason",
                        format!(
                            "say why, in 1 to {MAX_ERASE_REASON_CHARS} printable characters \
                             (a reference such as a ticket, not the person's words)"
                        ),
                    )
                    .into());
                }
                return Ok(vec![ClientEvent::UserErased(UserErased {
                    reason: reason.to_owned(),
                    erased_at: now,
                })]);
            }
            (Lifecycle::Deleted, ClientAction::DeleteUser) => return Ok(vec![]),
            (Lifecycle::Deleted, _) => return Err(ClientError::Deleted),
            _ => {}
        }
        let mut decision = Decision::new(self);
        let mut cause = ScoreCause::Activity;
        // A manual score holds until the client does something (an order, a profile change)
        // or someone asks for a rescore; our own actions on the client (writing an email,
        // recording an opt-out) do not overwrite it.
        let keeps_manual_score = matches!(
            command.action,
            ClientAction::RecordEmail(_) | ClientAction::Unsubscribe
        ) && self
            .score
            .as_ref()
            .is_some_and(|s| s.policy == MANUAL_POLICY);
        match command.action {
            ClientAction::CreateUser(create) => {
                if create.imported {
                    cause = ScoreCause::Imported;
                }
                self.create(create, now, &services.holdout, &mut decision)?;
            }
            ClientAction::UpdateUser(update) => self.update(update, now, &mut decision)?,
            ClientAction::PlaceOrder(order) => place_order(order, now, &mut decision)?,
            ClientAction::PlaceOrders(batch) => {
                place_orders(batch, now, services, &mut decision)?;
                return Ok(decision.events);
            }
            ClientAction::CancelOrder(cancel) => self.cancel_order(cancel, now, &mut decision)?,
            ClientAction::SetEngagementScore(set) => {
                self.set_score(set, now, services, &mut decision);
                return Ok(decision.events);
            }
            ClientAction::Rescore => {
                decision.rescore(services, now, ScoreCause::TimePassed);
                return Ok(decision.events);
            }
            ClientAction::RecordEmail(email) => {
                self.record_email(email, now, services, &mut decision)?
            }
            ClientAction::AssignGroup(group) => {
                if self.group.is_none() {
                    decision.push(ClientEvent::GroupAssigned(super::events::GroupAssigned {
                        group,
                        assigned_at: now,
                    }));
                }
                return Ok(decision.events);
            }
            ClientAction::Deliver(action) => {
                // Delivery changes no fact a score reads.
                self.deliver(action, now, &mut decision)?;
                return Ok(decision.events);
            }
            ClientAction::Unsubscribe => {
                if self.lifecycle == Lifecycle::Active {
                    decision.push(ClientEvent::UserUnsubscribed(UserUnsubscribed {
                        unsubscribed_at: now,
                        source: None,
                        email_id: None,
                    }));
                }
            }
            ClientAction::DeleteUser => {
                decision.push(ClientEvent::UserDeleted(UserDeleted { deleted_at: now }));
                return Ok(decision.events);
            }
            ClientAction::EraseUser { .. } => unreachable!("decided above, in any lifecycle"),
        }
        if !decision.events.is_empty() && !keeps_manual_score {
            decision.rescore(services, now, cause);
        }
        Ok(decision.events)
    }

    fn create(
        &self,
        create: CreateUser,
        now: DateTime<Utc>,
        holdout: &Holdout,
        decision: &mut Decision,
    ) -> Result<(), ClientError> {
        let last_order_at = not_in_future(create.history.last_order_at, now, "lastOrderDate")?;
        let orders = summary_from_history(
            create.history.order_count,
            create.history.average_order_value,
            last_order_at,
        );
        let client_since = not_in_future(create.client_since, now, "createdAt")?;
        let external_id = create.external_id.map(|id| id.as_str().to_owned());
        if self.lifecycle != Lifecycle::New {
            let same = self.id == Some(create.id)
                && (external_id.is_none() || self.external_id == external_id)
                && self.name == create.name.as_str()
                && self.email == create.email.as_str()
                && self.preferred_categories == create.preferred_categories.as_slice()
                && self.orders.order_count == orders.order_count
                && self.orders.average_order_value_cents == orders.average_order_value_cents
                && self.orders.last_order_at == orders.last_order_at;
            return if same {
                Ok(())
            } else {
                Err(ClientError::AlreadyExists)
            };
        }
        decision.push(ClientEvent::UserCreated(UserCreated {
            user_id: create.id,
            name: create.name.as_str().to_owned(),
            email: create.email.as_str().to_owned(),
            preferred_categories: create.preferred_categories.as_slice().to_vec(),
            orders,
            created_at: now,
            external_id,
            client_since: client_since.filter(|since| *since < now),
            group: Some(holdout.assign(create.id)),
        }));
        Ok(())
    }

    fn update(
        &self,
        update: UpdateUser,
        now: DateTime<Utc>,
        decision: &mut Decision,
    ) -> Result<(), ClientError> {
        let mut changed = Vec::new();
        let name = match update.name {
            Some(n) if n.as_str() != self.name => {
                changed.push("name");
                n.as_str().to_owned()
            }
            _ => self.name.clone(),
        };
        let email = match update.email {
            Some(e) if e.as_str() != self.email => {
                changed.push("email");
                e.as_str().to_owned()
            }
            _ => self.email.clone(),
        };
        let preferred_categories = match update.preferred_categories {
            Some(c) if c.as_slice() != self.preferred_categories => {
                changed.push("preferredCategories");
                c.as_slice().to_vec()
            }
            _ => self.preferred_categories.clone(),
        };
        let mut orders = self.orders.clone();
        let last_order_at = not_in_future(update.last_order_at, now, "lastOrderDate")?;
        if last_order_at.is_some() && last_order_at != orders.last_order_at {
            changed.push("lastOrderDate");
            orders.last_order_at = last_order_at;
        }
        let count = update.order_count.unwrap_or(orders.order_count);
        let average = update
            .average_order_value
            .map_or(orders.average_order_value_cents, Money::cents);
        if count != orders.order_count || average != orders.average_order_value_cents {
            if count != orders.order_count {
                changed.push("orderCount");
            }
            if average != orders.average_order_value_cents {
                changed.push("averageOrderValue");
            }
            let average = Money::from_cents(average, "averageOrderValue")?;
            let corrected = summary_from_history(count, average, orders.last_order_at);
            orders = OrderSummary {
                first_order_at: orders.first_order_at,
                ..corrected
            };
        }
        let external_id = match update.external_id {
            Some(id) if self.external_id.as_deref() == Some(id.as_str()) => None,
            Some(_) if self.external_id.is_some() => {
                return Err(ValidationError::new(
                    "externalId",
                    "this user already has another external id; it cannot be changed",
                )
                .into())
            }
            Some(id) => {
                changed.push("externalId");
                Some(id.as_str().to_owned())
            }
            None => None,
        };
        if changed.is_empty() {
            return Ok(());
        }
        decision.push(ClientEvent::UserUpdated(UserUpdated {
            changed: changed.into_iter().map(str::to_owned).collect(),
            name,
            email,
            preferred_categories,
            orders,
            updated_at: now,
            external_id,
        }));
        Ok(())
    }

    fn cancel_order(
        &self,
        cancel: CancelOrder,
        now: DateTime<Utc>,
        decision: &mut Decision,
    ) -> Result<(), ClientError> {
        let id = cancel.order_id.as_str();
        let Some(line) = self.order_lines.get(id) else {
            return Err(
                ValidationError::new("orderId", "this user has no order with this id").into(),
            );
        };
        if line.cancelled {
            return Ok(());
        }
        let remaining = || {
            self.order_lines
                .iter()
                .filter(|(other, line)| other.as_str() != id && !line.cancelled)
                .map(|(_, line)| line.placed_at)
        };
        let previous = &self.orders;
        let order_count = previous.order_count.saturating_sub(1);
        let total = (previous.total_spent_cents - line.amount_cents).max(0);
        let average = if order_count == 0 {
            0
        } else {
            Money::average(Money::from_cents(total, "amount")?, order_count).cents()
        };
        let orders = OrderSummary {
            order_count,
            total_spent_cents: total,
            average_order_value_cents: average,
            last_order_at: remaining().chain(self.history_last_order_at).max(),
            first_order_at: remaining().min(),
        };
        let reason = cancel
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        decision.push(ClientEvent::OrderCancelled(OrderCancelled {
            order_id: id.to_owned(),
            amount_cents: line.amount_cents,
            reason,
            orders,
            cancelled_at: now,
        }));
        Ok(())
    }

    fn set_score(
        &self,
        set: SetEngagementScore,
        now: DateTime<Utc>,
        services: &ClientServices,
        decision: &mut Decision,
    ) {
        let band = services
            .policy
            .band_for(set.score, self.score.as_ref().map(|s| s.band));
        let reason = set
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if let Some(current) = &self.score {
            if current.score == set.score.value()
                && current.band == band
                && current.policy == MANUAL_POLICY
            {
                return;
            }
        }
        let detail = match &reason {
            Some(r) => format!("Set by {} by hand: {r}", set.actor),
            None => format!("Set by {} by hand.", set.actor),
        };
        decision.push(ClientEvent::UserScored(UserScored {
            score: set.score.value(),
            previous_score: self.score.as_ref().map(|s| s.score),
            band,
            previous_band: self.score.as_ref().map(|s| s.band),
            threshold: services.policy.threshold(),
            policy: MANUAL_POLICY.to_owned(),
            factors: vec![ScoreFactor {
                name: "manual".into(),
                points: f64::from(set.score.value()),
                detail,
            }],
            as_of: now,
            cause: ScoreCause::Manual,
            reason,
            actor: Some(set.actor),
            next_change_at: None,
        }));
    }

    fn record_email(
        &self,
        email: RecordEmail,
        now: DateTime<Utc>,
        services: &ClientServices,
        decision: &mut Decision,
    ) -> Result<(), ClientError> {
        if self.email_ids.contains(&email.email_id) {
            return Ok(());
        }
        if self.lifecycle == Lifecycle::Unsubscribed {
            return Err(ClientError::Unsubscribed);
        }
        if self.is_suppressed() {
            return Err(ClientError::AddressSuppressed);
        }
        // An email the process manager asked for is written only while the reason for it
        // holds: a client who recovered between the trigger and the writing is not emailed.
        if email.trigger.is_some() && !self.is_at_risk() {
            return Err(ClientError::NotAtRisk);
        }
        if let Some(next_allowed_at) = self.next_email_allowed_at(services.email_cooldown) {
            if now < next_allowed_at {
                return Err(ClientError::EmailCooldown { next_allowed_at });
            }
        }
        let content = email.content;
        let subject = content.subject.trim();
        if subject.is_empty() || subject.contains(['\n', '\r']) || subject.chars().count() > 200 {
            return Err(ValidationError::new(
                "subject",
                "must be one non-empty line of at most 200 characters",
            )
            .into());
        }
        if content.text.trim().is_empty() || content.html.trim().is_empty() {
            return Err(ValidationError::new("text", "the email body must not be empty").into());
        }
        decision.push(ClientEvent::EmailGenerated(EmailGenerated {
            email_id: email.email_id,
            subject: subject.to_owned(),
            preheader: content.preheader,
            text: content.text,
            html: content.html,
            generator: content.generator,
            usage: content.usage,
            engagement_score_at_time: self.score.as_ref().map_or(0, |s| s.score),
            trigger: email.trigger,
            generated_at: now,
            delivery: Some(email.delivery),
        }));
        Ok(())
    }

    /// Moves an email forward (never back: an event applied again over a later state, as a
    /// snapshot's reload may do, changes nothing).
    fn advance(&mut self, email_id: Uuid, status: EmailStatus, queued: bool) {
        let to = EmailDelivery { status, queued };
        if let Some(current) = self.deliveries.get_mut(&email_id) {
            if stage(&to) > stage(current) {
                *current = to;
            }
        }
    }

    fn delivery(&self, email_id: Uuid) -> Result<EmailDelivery, ClientError> {
        self.deliveries
            .get(&email_id)
            .copied()
            .ok_or(ClientError::EmailNotFound)
    }

    fn deliver(
        &self,
        action: DeliveryAction,
        now: DateTime<Utc>,
        decision: &mut Decision,
    ) -> Result<(), ClientError> {
        match action {
            DeliveryAction::Approve { email_id, actor } => {
                let current = self.delivery(email_id)?;
                match current.status {
                    EmailStatus::PendingReview => {
                        decision.push(ClientEvent::EmailApproved(EmailApproved {
                            email_id,
                            reviewed_by: actor,
                            approved_at: now,
                        }));
                    }
                    // Approving twice, or an approved email that has left since, is done.
                    _ if current.queued || current.status == EmailStatus::Sent => {}
                    status => {
                        return Err(ClientError::EmailNotAllowed {
                            status,
                            action: "approved",
                        })
                    }
                }
            }
            DeliveryAction::Reject {
                email_id,
                actor,
                reason,
            } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(ValidationError::new("reason", "a rejection needs a reason").into());
                }
                match self.delivery(email_id)?.status {
                    EmailStatus::PendingReview => {
                        decision.push(ClientEvent::EmailRejected(EmailRejected {
                            email_id,
                            reviewed_by: actor,
                            reason: reason.to_owned(),
                            rejected_at: now,
                        }));
                    }
                    EmailStatus::Rejected => {}
                    status => {
                        return Err(ClientError::EmailNotAllowed {
                            status,
                            action: "rejected",
                        })
                    }
                }
            }
            DeliveryAction::Cancel { email_id, reason } => {
                let current = self.delivery(email_id)?;
                if current.queued || current.status == EmailStatus::PendingReview {
                    decision.push(ClientEvent::EmailCancelled(EmailCancelled {
                        email_id,
                        reason,
                        cancelled_at: now,
                    }));
                }
            }
            DeliveryAction::Sent {
                email_id,
                message_id,
            } => {
                let current = self.delivery(email_id)?;
                // What left is recorded whatever was decided meanwhile; only once.
                if !matches!(
                    current.status,
                    EmailStatus::Sent | EmailStatus::Bounced | EmailStatus::Complained
                ) {
                    decision.push(ClientEvent::EmailSent(EmailSent {
                        email_id,
                        message_id,
                        sent_at: now,
                    }));
                }
            }
            DeliveryAction::Failed {
                email_id,
                reply,
                recipient_refused,
            } => {
                if self.delivery(email_id)?.queued {
                    decision.push(ClientEvent::EmailFailed(EmailFailed {
                        email_id,
                        reply: reply.clone(),
                        failed_at: now,
                    }));
                }
                if recipient_refused {
                    self.suppress(reply, "smtp", now, decision);
                }
            }
            DeliveryAction::Bounced {
                email_id,
                permanent,
            } => {
                let current = self.delivery(email_id)?;
                if current.status == EmailStatus::Bounced {
                    return Ok(());
                }
                decision.push(ClientEvent::EmailBounced(EmailBounced {
                    email_id,
                    permanent,
                    reported_at: now,
                }));
                if permanent {
                    self.suppress(
                        "the provider reported a permanent bounce".into(),
                        "bounce",
                        now,
                        decision,
                    );
                }
            }
            DeliveryAction::Complained { email_id } => {
                if self.delivery(email_id)?.status != EmailStatus::Complained {
                    decision.push(ClientEvent::EmailComplained(EmailComplained {
                        email_id,
                        reported_at: now,
                    }));
                }
                if self.lifecycle == Lifecycle::Active {
                    decision.push(ClientEvent::UserUnsubscribed(UserUnsubscribed {
                        unsubscribed_at: now,
                        source: Some("complaint".into()),
                        email_id: Some(email_id),
                    }));
                }
            }
            DeliveryAction::Unsubscribe { email_id, source } => {
                if self.lifecycle == Lifecycle::Active {
                    decision.push(ClientEvent::UserUnsubscribed(UserUnsubscribed {
                        unsubscribed_at: now,
                        source: Some(source),
                        email_id,
                    }));
                }
            }
            DeliveryAction::Suppress { reason, source } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(ValidationError::new(
                        "reason",
                        "say why the address is suppressed",
                    )
                    .into());
                }
                self.suppress(reason.to_owned(), &source, now, decision);
            }
        }
        Ok(())
    }

    /// Suppresses the client's current address, once.
    fn suppress(&self, reason: String, source: &str, now: DateTime<Utc>, decision: &mut Decision) {
        if decision.state.is_suppressed() {
            return;
        }
        decision.push(ClientEvent::AddressSuppressed(AddressSuppressed {
            address: self.email.clone(),
            reason,
            source: source.to_owned(),
            suppressed_at: now,
        }));
    }

    /// Treatment or holdout. Clients created before the holdout existed, and not yet
    /// backfilled, were all eligible for emails: treatment.
    pub fn group(&self) -> EngagementGroup {
        self.group.unwrap_or_default()
    }

    /// Whether the client's current address is suppressed.
    pub fn is_suppressed(&self) -> bool {
        self.suppressed_address.as_deref() == Some(self.email.as_str())
    }

    /// Where an email written to the client stands (`None`: no such email, or one written
    /// before delivery existed and never touched since).
    pub fn email_delivery(&self, email_id: Uuid) -> Option<EmailDelivery> {
        self.deliveries.get(&email_id).copied()
    }

    /// The facts a scoring policy looks at.
    pub fn facts(&self) -> ClientFacts {
        ClientFacts {
            order_count: self.orders.order_count,
            average_order_value: Money::from_cents(
                self.orders.average_order_value_cents,
                "averageOrderValue",
            )
            .unwrap_or(Money::ZERO),
            first_order_at: self.orders.first_order_at,
            last_order_at: self.orders.last_order_at,
            last_email_at: self.last_email_at,
            unsubscribed: self.lifecycle == Lifecycle::Unsubscribed,
            created_at: self.created_at,
        }
    }

    /// Whether the client's last recorded score (a manual one included) puts them in the
    /// at-risk band: the one rule behind the `atRisk` flag and the process manager's trigger.
    pub fn is_at_risk(&self) -> bool {
        self.score.as_ref().is_some_and(|s| s.band.is_at_risk())
    }

    /// Whether an email may be written to the client at `now`: created, not deleted, not
    /// opted out, and outside the cooldown after the last email.
    pub fn may_be_emailed(&self, now: DateTime<Utc>, cooldown: Duration) -> bool {
        self.lifecycle == Lifecycle::Active
            && !self.is_suppressed()
            && self
                .next_email_allowed_at(cooldown)
                .is_none_or(|t| t <= now)
    }

    /// The earliest moment another email may be recorded, if an email was sent before.
    pub fn next_email_allowed_at(&self, cooldown: Duration) -> Option<DateTime<Utc>> {
        self.last_email_at.map(|t| t + cooldown)
    }

    /// The client's id, once created.
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }
    /// Where the client is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }
    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The client's id in the retailer's systems.
    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }
    /// Email address.
    pub fn email(&self) -> &str {
        &self.email
    }
    /// Preferred categories.
    pub fn preferred_categories(&self) -> &[String] {
        &self.preferred_categories
    }
    /// Order summary.
    pub fn orders(&self) -> &OrderSummary {
        &self.orders
    }
    /// Number of distinct orders recorded through `PlaceOrder`.
    pub fn recorded_order_ids(&self) -> usize {
        self.order_ids.len()
    }
    /// Last email written.
    pub fn last_email_at(&self) -> Option<DateTime<Utc>> {
        self.last_email_at
    }
    /// Current score.
    pub fn score(&self) -> Option<&ScoreState> {
        self.score.as_ref()
    }
    /// Creation time.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }
    /// Time of the last event.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }
}

/// How far along its life an email is: written (0), released for sending (1), settled (2),
/// reported on after sending (3).
fn stage(d: &EmailDelivery) -> u8 {
    match d.status {
        EmailStatus::Generated if d.queued => 1,
        EmailStatus::Generated | EmailStatus::WouldSend | EmailStatus::PendingReview => 0,
        EmailStatus::Sent
        | EmailStatus::Cancelled
        | EmailStatus::Rejected
        | EmailStatus::Failed => 2,
        EmailStatus::Bounced | EmailStatus::Complained => 3,
    }
}

/// The policy name recorded for manual overrides.
pub const MANUAL_POLICY: &str = "manual";

/// Events decided so far, with the state they lead to (so the rescore sees the new facts).
struct Decision {
    state: Client,
    events: Vec<ClientEvent>,
}

impl Decision {
    fn new(client: &Client) -> Self {
        Self {
            state: client.clone(),
            events: Vec::new(),
        }
    }

    fn push(&mut self, event: ClientEvent) {
        self.state.apply(event.clone());
        self.events.push(event);
    }

    /// Scores the state as it now stands; records `UserScored` if the score, band or policy
    /// moved, or if the moment time alone will next change the score moved (the rescore
    /// scheduler works from that moment; left stale, it would ask again and again).
    fn rescore(&mut self, services: &ClientServices, now: DateTime<Utc>, cause: ScoreCause) {
        let policy = &services.policy;
        let previous = self.state.score.clone();
        let assessment = policy.assess(&self.state.facts(), now, previous.as_ref().map(|s| s.band));
        let unchanged = previous.as_ref().is_some_and(|p| {
            p.score == assessment.score.value()
                && p.band == assessment.band
                && p.policy == policy.name()
                && p.next_change_at == assessment.next_change_at
        });
        if unchanged {
            return;
        }
        self.push(ClientEvent::UserScored(UserScored {
            score: assessment.score.value(),
            previous_score: previous.as_ref().map(|s| s.score),
            band: assessment.band,
            previous_band: previous.as_ref().map(|s| s.band),
            threshold: policy.threshold(),
            policy: policy.name().to_owned(),
            factors: assessment.factors,
            as_of: now,
            cause,
            reason: None,
            actor: None,
            next_change_at: assessment.next_change_at,
        }));
    }
}

/// Records `order` on the state decided so far (so an id repeated within one batch counts
/// once).
fn place_order(
    order: PlaceOrder,
    now: DateTime<Utc>,
    decision: &mut Decision,
) -> Result<(), ClientError> {
    let state = &decision.state;
    if state.order_ids.contains(order.order_id.as_str()) {
        return Ok(());
    }
    let placed_at = not_in_future(Some(order.placed_at), now, "placedAt")?.unwrap_or(now);
    let previous = &state.orders;
    let order_count = previous
        .order_count
        .checked_add(1)
        .ok_or_else(|| ValidationError::new("orderId", "this client has too many orders"))?;
    let total = previous.total_spent_cents + order.amount.cents();
    let orders = OrderSummary {
        order_count,
        total_spent_cents: total,
        average_order_value_cents: Money::average(Money::from_cents(total, "amount")?, order_count)
            .cents(),
        last_order_at: Some(
            previous
                .last_order_at
                .map_or(placed_at, |t| t.max(placed_at)),
        ),
        first_order_at: Some(
            previous
                .first_order_at
                .map_or(placed_at, |t| t.min(placed_at)),
        ),
    };
    decision.push(ClientEvent::OrderPlaced(OrderPlaced {
        order_id: order.order_id.as_str().to_owned(),
        amount_cents: order.amount.cents(),
        placed_at,
        categories: order.categories.as_slice().to_vec(),
        orders,
        recorded_at: now,
    }));
    Ok(())
}

/// Records a batch of orders as one-by-one placement would, but with one score at the end:
/// the client is rescored after every order (so the band walks the same path through the
/// policy's hysteresis) and only the last change is kept, with the score before the batch as
/// its previous score.
fn place_orders(
    batch: PlaceOrders,
    now: DateTime<Utc>,
    services: &ClientServices,
    decision: &mut Decision,
) -> Result<(), ClientError> {
    let before = decision.state.score.clone();
    let cause = if batch.history {
        ScoreCause::Imported
    } else {
        ScoreCause::Activity
    };
    for order in batch.orders {
        let placed = decision.events.len();
        place_order(order, now, decision)?;
        if decision.events.len() > placed {
            decision.rescore(services, now, cause);
        }
    }
    let mut last_score = None;
    let mut kept = Vec::with_capacity(decision.events.len());
    for event in std::mem::take(&mut decision.events) {
        match event {
            ClientEvent::UserScored(scored) => last_score = Some(scored),
            other => kept.push(other),
        }
    }
    if let Some(mut scored) = last_score {
        scored.previous_score = before.as_ref().map(|s| s.score);
        scored.previous_band = before.as_ref().map(|s| s.band);
        kept.push(ClientEvent::UserScored(scored));
    }
    decision.events = kept;
    Ok(())
}

fn not_in_future(
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    match at {
        Some(t) if t > now + Duration::minutes(FUTURE_TOLERANCE_MINUTES) => {
            Err(ValidationError::new(field, "must not be in the future"))
        }
        other => Ok(other),
    }
}

fn summary_from_history(
    count: u32,
    average: Money,
    last_order_at: Option<DateTime<Utc>>,
) -> OrderSummary {
    let average = if count == 0 { Money::ZERO } else { average };
    OrderSummary {
        order_count: count,
        total_spent_cents: average.cents() * i64::from(count),
        average_order_value_cents: average.cents(),
        last_order_at,
        first_order_at: None,
    }
}
