//! The client's rules, as sentences: given these events, when this command, then these events.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;
use crate::scoring::{Band, ScoringPolicy, SeedV1};
use crate::values::{Categories, EmailAddress, ExternalId, Money, OrderId, Score, UserName};

type ClientTest = TestFramework<Client>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

fn day(n: i64) -> DateTime<Utc> {
    t0() + Duration::days(n)
}

fn user_id() -> Uuid {
    Uuid::from_u128(0x1234)
}

/// The seed's rule: its numbers are the ones these tests were written in.
fn services() -> ClientServices {
    ClientServices {
        policy: std::sync::Arc::new(SeedV1),
        ..ClientServices::default()
    }
}

fn create_user() -> CreateUser {
    CreateUser {
        id: user_id(),
        name: UserName::parse("Ada Lovelace").unwrap(),
        email: EmailAddress::parse("ada@example.com").unwrap(),
        preferred_categories: Categories::parse(&["Denim"], "preferredCategories").unwrap(),
        history: ImportedHistory::default(),
        external_id: None,
        client_since: None,
        imported: false,
    }
}

fn at(action: ClientAction, now: DateTime<Utc>) -> ClientCommand {
    ClientCommand::new(action, now)
}

/// Runs `commands` from nothing and returns every event, in order.
fn history(commands: Vec<ClientCommand>) -> Vec<ClientEvent> {
    history_from(&[], commands)
}

/// Runs `commands` after `given` and returns only the new events.
fn history_from(given: &[ClientEvent], commands: Vec<ClientCommand>) -> Vec<ClientEvent> {
    let mut client = replay(given);
    let mut all = Vec::new();
    for command in commands {
        for event in client
            .decide(command, &services())
            .expect("command accepted")
        {
            client.apply(event.clone());
            all.push(event);
        }
    }
    all
}

fn created() -> Vec<ClientEvent> {
    history(vec![at(ClientAction::CreateUser(create_user()), t0())])
}

fn order(id: &str, amount: &str, placed_at: DateTime<Utc>) -> ClientAction {
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(id).unwrap(),
        amount: Money::parse(amount, "amount").unwrap(),
        placed_at,
        categories: Categories::default(),
    })
}

/// An email written by hand (no trigger): only the cooldown and opt-out apply.
fn email(id: u128) -> ClientAction {
    with_trigger(id, None)
}

/// An email the process manager asked for, after the event at sequence 2.
fn triggered_email(id: u128) -> ClientAction {
    with_trigger(
        id,
        Some(EmailTrigger {
            sequence: 2,
            global_position: 7,
        }),
    )
}

fn with_trigger(id: u128, trigger: Option<EmailTrigger>) -> ClientAction {
    ClientAction::RecordEmail(RecordEmail {
        email_id: Uuid::from_u128(id),
        content: EmailContent {
            subject: "We miss you".into(),
            preheader: "New denim is in".into(),
            text: "Hi Ada".into(),
            html: "<p>Hi Ada</p>".into(),
            generator: Generator {
                kind: "template".into(),
                model: "v1".into(),
            },
            usage: None,
        },
        trigger,
        delivery: DeliveryMode::Off,
    })
}

fn email_in(id: u128, delivery: DeliveryMode) -> ClientAction {
    let ClientAction::RecordEmail(mut record) = email(id) else {
        unreachable!()
    };
    record.delivery = delivery;
    ClientAction::RecordEmail(record)
}

fn deliver(action: DeliveryAction) -> ClientAction {
    ClientAction::Deliver(action)
}

#[test]
fn a_reviewed_email_is_approved_or_rejected_once_with_who_and_why() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(email_in(1, DeliveryMode::Review), day(1)),
    ]);
    let client = replay(&given);
    let id = Uuid::from_u128(1);
    assert_eq!(
        client.email_delivery(id).unwrap().status,
        EmailStatus::PendingReview
    );
    let approve = || {
        deliver(DeliveryAction::Approve {
            email_id: id,
            actor: "ops-1".into(),
        })
    };
    let approved = history_from(&given, vec![at(approve(), day(1)), at(approve(), day(2))]);
    assert_eq!(approved.len(), 1, "approving twice records once");
    assert!(matches!(&approved[0], ClientEvent::EmailApproved(e) if e.reviewed_by == "ops-1"));
    let after = replay(&[given.clone(), approved].concat());
    assert!(after.email_delivery(id).unwrap().queued);
    // Once approved it cannot be rejected; a rejection needs a reason.
    let rejected = replay(&given).decide(
        at(
            deliver(DeliveryAction::Reject {
                email_id: id,
                actor: "ops-1".into(),
                reason: " ".into(),
            }),
            day(1),
        ),
        &services(),
    );
    assert!(matches!(rejected, Err(ClientError::Validation(v)) if v.field == "reason"));
    let err = after
        .decide(
            at(
                deliver(DeliveryAction::Reject {
                    email_id: id,
                    actor: "ops-1".into(),
                    reason: "tone".into(),
                }),
                day(2),
            ),
            &services(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::EmailNotAllowed {
            action: "rejected",
            ..
        }
    ));
    // An email that is not the client's is not found.
    assert_eq!(
        replay(&given).decide(
            at(
                deliver(DeliveryAction::Approve {
                    email_id: Uuid::from_u128(99),
                    actor: "ops".into()
                }),
                day(1)
            ),
            &services()
        ),
        Err(ClientError::EmailNotFound)
    );
}

#[test]
fn a_refused_recipient_suppresses_the_address_until_it_changes() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(email_in(1, DeliveryMode::Auto), day(1)),
    ]);
    let id = Uuid::from_u128(1);
    let failed = history_from(
        &given,
        vec![at(
            deliver(DeliveryAction::Failed {
                email_id: id,
                reply: "550 5.1.1 no such user".into(),
                recipient_refused: true,
            }),
            day(1),
        )],
    );
    assert!(matches!(&failed[0], ClientEvent::EmailFailed(_)));
    assert!(
        matches!(&failed[1], ClientEvent::AddressSuppressed(e) if e.address == "ada@example.com" && e.source == "smtp")
    );
    let all = [given, failed].concat();
    let client = replay(&all);
    assert!(client.is_suppressed());
    assert!(!client.may_be_emailed(day(30), Duration::days(7)));
    assert_eq!(
        client.decide(at(email(2), day(30)), &services()),
        Err(ClientError::AddressSuppressed)
    );
    // A new address lifts it.
    let moved = history_from(
        &all,
        vec![at(
            ClientAction::UpdateUser(UpdateUser {
                email: Some(EmailAddress::parse("ada@new.example").unwrap()),
                ..UpdateUser::default()
            }),
            day(31),
        )],
    );
    let client = replay(&[all, moved].concat());
    assert!(!client.is_suppressed());
    assert!(client.decide(at(email(2), day(31)), &services()).is_ok());
}

#[test]
fn a_complaint_unsubscribes_and_sending_is_recorded_once_even_when_applied_again() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(email_in(1, DeliveryMode::Auto), day(1)),
    ]);
    let id = Uuid::from_u128(1);
    let sent = || {
        deliver(DeliveryAction::Sent {
            email_id: id,
            message_id: "<1@example.com>".into(),
        })
    };
    let events = history_from(
        &given,
        vec![
            at(sent(), day(1)),
            at(sent(), day(1)),
            at(deliver(DeliveryAction::Complained { email_id: id }), day(2)),
            at(deliver(DeliveryAction::Complained { email_id: id }), day(2)),
        ],
    );
    let types: Vec<String> = events
        .iter()
        .map(cqrs_es::DomainEvent::event_type)
        .collect();
    assert_eq!(types, ["EmailSent", "EmailComplained", "UserUnsubscribed"]);
    let mut client = replay(&[given, events.clone()].concat());
    assert_eq!(client.lifecycle(), Lifecycle::Unsubscribed);
    // A reload that applies an older event again moves nothing back.
    client.apply(events[0].clone());
    assert_eq!(
        client.email_delivery(id).unwrap().status,
        EmailStatus::Complained
    );
}

fn scored(events: &[ClientEvent]) -> Vec<&UserScored> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::UserScored(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn replay(events: &[ClientEvent]) -> Client {
    let mut client = Client::default();
    for e in events {
        client.apply(e.clone());
    }
    client
}

#[test]
fn creating_a_user_records_them_and_scores_them() {
    let events = created();
    let ClientEvent::UserCreated(created) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(created.user_id, user_id());
    assert_eq!(created.name, "Ada Lovelace");
    assert_eq!(created.preferred_categories, ["Denim"]);
    let score = scored(&events);
    assert_eq!(score.len(), 1);
    assert_eq!(
        score[0].score, 60,
        "no orders at all scores 60 under seed-v1"
    );
    assert_eq!(score[0].previous_score, None);
    assert_eq!(score[0].policy, "seed-v1");
    assert_eq!(score[0].cause, ScoreCause::Activity);
}

#[test]
fn creating_the_same_user_twice_is_a_no_op_but_different_data_is_refused() {
    ClientTest::with(services())
        .given(created())
        .when(at(ClientAction::CreateUser(create_user()), day(1)))
        .then_expect_events(vec![]);
    let mut other = create_user();
    other.name = UserName::parse("Someone Else").unwrap();
    ClientTest::with(services())
        .given(created())
        .when(at(ClientAction::CreateUser(other), day(1)))
        .then_expect_error(ClientError::AlreadyExists);
}

#[test]
fn a_command_to_a_user_that_does_not_exist_is_not_found() {
    ClientTest::with(services())
        .given_no_previous_events()
        .when(at(order("o-1", "10", t0()), t0()))
        .then_expect_error(ClientError::NotFound);
}

#[test]
fn creating_with_imported_history_carries_the_summary_and_scores_it() {
    let mut create = create_user();
    create.history = ImportedHistory {
        order_count: 10,
        average_order_value: Money::parse("200", "averageOrderValue").unwrap(),
        last_order_at: Some(t0() - Duration::days(10)),
    };
    let events = history(vec![at(ClientAction::CreateUser(create), t0())]);
    let ClientEvent::UserCreated(created) = &events[0] else {
        panic!()
    };
    assert_eq!(created.orders.order_count, 10);
    assert_eq!(created.orders.total_spent_cents, 200_000);
    assert_eq!(scored(&events)[0].score, 100);
}

#[test]
fn an_imported_last_order_date_in_the_future_is_refused_naming_the_field() {
    let mut create = create_user();
    create.history.last_order_at = Some(t0() + Duration::days(2));
    let err = Client::default()
        .decide(at(ClientAction::CreateUser(create), t0()), &services())
        .unwrap_err();
    let ClientError::Validation(v) = err else {
        panic!("{err:?}")
    };
    assert_eq!(v.field, "lastOrderDate");
}

#[test]
fn placing_an_order_raises_a_lapsed_users_score_and_carries_the_new_summary() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-1", "40", t0()), t0()),
        at(ClientAction::Rescore, day(75)),
    ]);
    assert_eq!(replay(&given).score().unwrap().score, 74);
    let events = ClientTest::with(services())
        .given(given.clone())
        .when(at(order("o-2", "60.50", day(75)), day(75)))
        .inspect_result()
        .unwrap();
    let ClientEvent::OrderPlaced(placed) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(placed.amount_cents, 6050);
    assert_eq!(placed.orders.order_count, 2);
    assert_eq!(placed.orders.total_spent_cents, 10_050);
    assert_eq!(placed.orders.average_order_value_cents, 5025);
    assert_eq!(placed.orders.last_order_at, Some(day(75)));
    assert_eq!(placed.orders.first_order_at, Some(t0()));
    let score = scored(&events);
    assert_eq!(score.len(), 1);
    // 100 + 3 (2 orders) + 2.5125 (AOV 50.25) = 105.5 -> 100
    assert_eq!((score[0].previous_score, score[0].score), (Some(74), 100));
}

#[test]
fn the_same_order_id_twice_is_recorded_once() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-1", "40", t0()), t0()),
    ]);
    ClientTest::with(services())
        .given(given)
        .when(at(order("o-1", "40", t0()), day(1)))
        .then_expect_events(vec![]);
}

#[test]
fn an_order_placed_in_the_future_is_refused() {
    let err = replay(&created())
        .decide(at(order("o-1", "40", day(3)), day(1)), &services())
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Validation(ref v) if v.field == "placedAt"),
        "{err:?}"
    );
}

#[test]
fn a_backdated_order_does_not_move_the_last_order_date_back() {
    let events = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-2", "10", day(20)), day(20)),
        at(order("o-1", "10", day(5)), day(21)),
    ]);
    let client = replay(&events);
    assert_eq!(client.orders().last_order_at, Some(day(20)));
    assert_eq!(client.orders().first_order_at, Some(day(5)));
}

#[test]
fn updating_changed_fields_records_which_ones_and_identical_values_record_nothing() {
    let update = UpdateUser {
        name: Some(UserName::parse("Ada King").unwrap()),
        email: Some(EmailAddress::parse("ada@example.com").unwrap()),
        ..UpdateUser::default()
    };
    let events = ClientTest::with(services())
        .given(created())
        .when(at(ClientAction::UpdateUser(update.clone()), day(1)))
        .inspect_result()
        .unwrap();
    let ClientEvent::UserUpdated(updated) = &events[0] else {
        panic!()
    };
    assert_eq!(updated.changed, ["name"]);
    assert_eq!(updated.name, "Ada King");
    assert_eq!(updated.email, "ada@example.com");

    let mut given = created();
    given.extend(events);
    ClientTest::with(services())
        .given(given)
        .when(at(ClientAction::UpdateUser(update), day(2)))
        .then_expect_events(vec![]);
}

#[test]
fn correcting_the_order_summary_rescores() {
    let update = UpdateUser {
        order_count: Some(10),
        average_order_value: Some(Money::parse("200", "averageOrderValue").unwrap()),
        last_order_at: Some(day(-10)),
        ..UpdateUser::default()
    };
    let events = ClientTest::with(services())
        .given(created())
        .when(at(ClientAction::UpdateUser(update), t0()))
        .inspect_result()
        .unwrap();
    let ClientEvent::UserUpdated(updated) = &events[0] else {
        panic!()
    };
    assert_eq!(
        updated.changed,
        ["lastOrderDate", "orderCount", "averageOrderValue"]
    );
    assert_eq!(updated.orders.total_spent_cents, 200_000);
    let score = scored(&events);
    assert_eq!((score[0].previous_score, score[0].score), (Some(60), 100));
}

#[test]
fn setting_the_score_by_hand_records_who_and_why() {
    let set = SetEngagementScore {
        score: Score::parse(20, "score").unwrap(),
        reason: Some(" churn test ".into()),
        actor: "operator:ops".into(),
    };
    let events = ClientTest::with(services())
        .given(created())
        .when(at(ClientAction::SetEngagementScore(set.clone()), day(1)))
        .inspect_result()
        .unwrap();
    let s = scored(&events);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].score, 20);
    assert_eq!(s[0].band, Band::AtRisk);
    assert_eq!(s[0].cause, ScoreCause::Manual);
    assert_eq!(s[0].policy, "manual");
    assert_eq!(s[0].reason.as_deref(), Some("churn test"));
    assert_eq!(s[0].actor.as_deref(), Some("operator:ops"));

    let mut given = created();
    given.extend(events);
    ClientTest::with(services())
        .given(given)
        .when(at(ClientAction::SetEngagementScore(set), day(1)))
        .then_expect_events(vec![]);
}

#[test]
fn rescoring_as_time_passes_records_the_fall_once() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-1", "40", t0()), t0()),
    ]);
    assert_eq!(replay(&given).score().unwrap().score, 100);
    let events = ClientTest::with(services())
        .given(given.clone())
        .when(at(ClientAction::Rescore, day(75)))
        .inspect_result()
        .unwrap();
    let s = scored(&events);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].previous_score, s[0].score), (Some(100), 74));
    assert_eq!(s[0].cause, ScoreCause::TimePassed);
    assert_eq!(s[0].next_change_at, Some(day(91)));

    let mut after = given;
    after.extend(events);
    ClientTest::with(services())
        .given(after)
        .when(at(ClientAction::Rescore, day(76)))
        .then_expect_events(vec![]);
}

#[test]
fn recording_an_email_is_idempotent_and_the_seed_rule_lowers_the_score_for_a_week() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-1", "20", t0()), t0()),
    ]);
    let events = ClientTest::with(services())
        .given(given.clone())
        .when(at(email(1), day(120)))
        .inspect_result()
        .unwrap();
    let ClientEvent::EmailGenerated(generated) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(generated.email_id, Uuid::from_u128(1));
    assert_eq!(
        generated.engagement_score_at_time, 100,
        "score as last recorded"
    );
    assert_eq!(generated.trigger, None);
    // seed-v1 at day 120 with an email today: 100 - 40 + 1.5 + 1 - 10 = 52.5 -> 53.
    assert_eq!(scored(&events)[0].score, 53);

    let mut after = given;
    after.extend(events);
    ClientTest::with(services())
        .given(after)
        .when(at(email(1), day(121)))
        .then_expect_events(vec![]);
}

fn set_score(score: i64) -> ClientAction {
    ClientAction::SetEngagementScore(SetEngagementScore {
        score: Score::parse(score, "score").unwrap(),
        reason: None,
        actor: "operator".into(),
    })
}

#[test]
fn a_triggered_email_is_written_only_while_the_client_is_at_risk() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(set_score(12), day(1)),
    ]);
    assert!(replay(&given).is_at_risk(), "a manual score counts");
    let events = ClientTest::with(services())
        .given(given.clone())
        .when(at(triggered_email(1), day(2)))
        .inspect_result()
        .unwrap();
    assert!(matches!(events[0], ClientEvent::EmailGenerated(ref e) if e.trigger.is_some()));

    // The client ordered after the trigger: seed-v1 lifts them out of the band.
    let mut recovered = given.clone();
    recovered.extend(history_from(
        &given,
        vec![at(order("o-1", "80", day(2)), day(2))],
    ));
    assert!(!replay(&recovered).is_at_risk());
    ClientTest::with(services())
        .given(recovered.clone())
        .when(at(triggered_email(1), day(2)))
        .then_expect_error(ClientError::NotAtRisk);
    // An email written by hand is not bound by the band.
    ClientTest::with(services())
        .given(recovered)
        .when(at(email(2), day(2)))
        .inspect_result()
        .unwrap();
}

#[test]
fn a_second_email_inside_the_cooldown_is_refused() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(email(1), day(1)),
    ]);
    ClientTest::with(services())
        .given(given.clone())
        .when(at(email(2), day(7)))
        .then_expect_error(ClientError::EmailCooldown {
            next_allowed_at: day(8),
        });
    let events = ClientTest::with(services())
        .given(given)
        .when(at(email(2), day(8)))
        .inspect_result()
        .unwrap();
    assert!(matches!(events[0], ClientEvent::EmailGenerated(_)));
}

#[test]
fn an_unsubscribed_user_gets_no_email_and_unsubscribing_twice_records_once() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(ClientAction::Unsubscribe, day(1)),
    ]);
    assert!(given
        .iter()
        .any(|e| matches!(e, ClientEvent::UserUnsubscribed(_))));
    ClientTest::with(services())
        .given(given.clone())
        .when(at(email(1), day(2)))
        .then_expect_error(ClientError::Unsubscribed);
    ClientTest::with(services())
        .given(given)
        .when(at(ClientAction::Unsubscribe, day(2)))
        .then_expect_events(vec![]);
}

#[test]
fn a_deleted_user_refuses_every_command_but_a_repeated_delete() {
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(ClientAction::DeleteUser, day(1)),
    ]);
    assert_eq!(
        given.last(),
        Some(&ClientEvent::UserDeleted(UserDeleted {
            deleted_at: day(1)
        }))
    );
    let refused = [
        ClientAction::CreateUser(create_user()),
        ClientAction::UpdateUser(UpdateUser {
            name: Some(UserName::parse("X").unwrap()),
            ..UpdateUser::default()
        }),
        order("o-1", "1", day(2)),
        ClientAction::SetEngagementScore(SetEngagementScore {
            score: Score::parse(1, "score").unwrap(),
            reason: None,
            actor: "a".into(),
        }),
        ClientAction::Rescore,
        email(1),
        ClientAction::Unsubscribe,
    ];
    for action in refused {
        ClientTest::with(services())
            .given(given.clone())
            .when(at(action, day(2)))
            .then_expect_error(ClientError::Deleted);
    }
    ClientTest::with(services())
        .given(given)
        .when(at(ClientAction::DeleteUser, day(2)))
        .then_expect_events(vec![]);
}

#[test]
fn an_erasure_forgets_the_person_refuses_every_later_command_and_is_idempotent() {
    let erase = |reason: &str| ClientAction::EraseUser {
        reason: reason.to_owned(),
    };
    // Deleted clients can be erased too: erasure is about the data, not the relationship.
    let mut given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-1", "12.50", day(1)), day(1)),
        at(ClientAction::DeleteUser, day(2)),
    ]);
    for reason in ["", "   ", "line\nbreak", &"x".repeat(201)] {
        ClientTest::with(services())
            .given(given.clone())
            .when(at(erase(reason), day(3)))
            .then_expect_error(ClientError::Validation(
                crate::values::ValidationError::new(
                    "reason",
                    "say why, in 1 to 200 printable characters (a reference such as a ticket, \
                     not the person's words)",
                ),
            ));
    }
    let erased = history_from(&given, vec![at(erase(" ticket 42 "), day(3))]);
    assert_eq!(
        erased,
        vec![ClientEvent::UserErased(UserErased {
            reason: "ticket 42".into(),
            erased_at: day(3),
        })]
    );
    given.extend(erased);
    let client = replay(&given);
    assert_eq!(client.lifecycle(), Lifecycle::Erased);
    assert_eq!((client.name(), client.email()), ("", ""));
    assert_eq!(client.external_id(), None);
    assert_eq!(
        ClientStatus::of(client.lifecycle()),
        Some(ClientStatus::Erased)
    );
    for action in [
        ClientAction::CreateUser(create_user()),
        order("o-2", "1", day(4)),
        ClientAction::Rescore,
        email(1),
        ClientAction::DeleteUser,
        ClientAction::Unsubscribe,
    ] {
        ClientTest::with(services())
            .given(given.clone())
            .when(at(action, day(4)))
            .then_expect_error(ClientError::Erased);
    }
    ClientTest::with(services())
        .given(given)
        .when(at(erase("again"), day(4)))
        .then_expect_events(vec![]);
    // Nobody to erase before creation.
    ClientTest::with(services())
        .given(vec![])
        .when(at(erase("x"), day(4)))
        .then_expect_error(ClientError::NotFound);
}

#[test]
fn switching_policy_records_a_score_naming_the_new_policy_even_when_the_number_is_the_same() {
    #[derive(Debug)]
    struct Renamed;
    impl ScoringPolicy for Renamed {
        fn name(&self) -> &'static str {
            "renamed"
        }
        fn assess(
            &self,
            facts: &crate::scoring::ClientFacts,
            now: DateTime<Utc>,
            prev: Option<Band>,
        ) -> crate::scoring::Assessment {
            SeedV1.assess(facts, now, prev)
        }
    }
    let renamed = ClientServices {
        policy: std::sync::Arc::new(Renamed),
        ..services()
    };
    let events = ClientTest::with(renamed)
        .given(created())
        .when(at(ClientAction::Rescore, t0()))
        .inspect_result()
        .unwrap();
    let s = scored(&events);
    assert_eq!(
        (s[0].policy.as_str(), s[0].score, s[0].previous_score),
        ("renamed", 60, Some(60))
    );
}

#[test]
fn replaying_the_events_rebuilds_the_state_the_commands_saw() {
    let events = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(order("o-1", "10", day(1)), day(1)),
        at(order("o-2", "30", day(2)), day(2)),
        at(email(9), day(40)),
        at(ClientAction::Unsubscribe, day(41)),
    ]);
    let client = replay(&events);
    assert_eq!(client.lifecycle(), Lifecycle::Unsubscribed);
    assert_eq!(client.orders().order_count, 2);
    assert_eq!(client.orders().average_order_value_cents, 2000);
    assert_eq!(client.last_email_at(), Some(day(40)));
    assert_eq!(client.recorded_order_ids(), 2);
    assert_eq!(client.updated_at(), Some(day(41)));
    let json = serde_json::to_value(&client).unwrap();
    let back: Client = serde_json::from_value(json).unwrap();
    assert_eq!(back, client, "the snapshot form round-trips");
}

#[tokio::test]
async fn handle_writes_the_decided_events_to_the_sink() {
    let events = ClientTest::with(services())
        .given_no_previous_events()
        .when_async(at(ClientAction::CreateUser(create_user()), t0()))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events, created());
}

#[test]
fn a_manual_score_holds_through_an_email_and_an_opt_out_but_not_through_an_order() {
    let manual = ClientAction::SetEngagementScore(SetEngagementScore {
        score: Score::parse(12, "score").unwrap(),
        reason: None,
        actor: "ops".into(),
    });
    let given = history(vec![
        at(ClientAction::CreateUser(create_user()), t0()),
        at(manual, day(1)),
    ]);
    let after_email = ClientTest::with(services())
        .given(given.clone())
        .when(at(email(1), day(2)))
        .inspect_result()
        .unwrap();
    assert!(scored(&after_email).is_empty(), "{after_email:?}");
    let after_opt_out = ClientTest::with(services())
        .given(given.clone())
        .when(at(ClientAction::Unsubscribe, day(2)))
        .inspect_result()
        .unwrap();
    assert!(scored(&after_opt_out).is_empty());
    let after_order = ClientTest::with(services())
        .given(given)
        .when(at(order("o", "10", day(2)), day(2)))
        .inspect_result()
        .unwrap();
    assert_eq!(scored(&after_order)[0].policy, "seed-v1");
}

fn placed(id: &str, amount: &str, placed_at: DateTime<Utc>) -> PlaceOrder {
    PlaceOrder {
        order_id: OrderId::parse(id).unwrap(),
        amount: Money::parse(amount, "amount").unwrap(),
        placed_at,
        categories: Categories::default(),
    }
}

#[test]
fn a_batch_of_orders_ends_where_one_by_one_placement_ends_with_one_score() {
    let orders = vec![
        placed("o1", "10.00", day(-400)),
        placed("o2", "20.00", day(-300)),
        placed("o1", "99.00", day(-200)),
        placed("o3", "30.50", day(-10)),
    ];
    let one_by_one = replay(
        &[
            created(),
            history_from(
                &created(),
                orders
                    .iter()
                    .map(|o| at(ClientAction::PlaceOrder(o.clone()), day(1)))
                    .collect(),
            ),
        ]
        .concat(),
    );
    let batch_events = history_from(
        &created(),
        vec![at(
            ClientAction::PlaceOrders(PlaceOrders {
                orders,
                history: true,
            }),
            day(1),
        )],
    );
    let batched = replay(&[created(), batch_events.clone()].concat());
    assert_eq!(batched.orders(), one_by_one.orders());
    assert_eq!(batched.orders().order_count, 3);
    assert_eq!(batched.orders().total_spent_cents, 6_050);
    assert_eq!(
        batched.score().map(|s| (s.score, s.band)),
        one_by_one.score().map(|s| (s.score, s.band))
    );
    let scores = scored(&batch_events);
    assert_eq!(scores.len(), 1, "one score for the whole batch");
    assert_eq!(scores[0].cause, ScoreCause::Imported);
    let first = created();
    assert_eq!(scores[0].previous_score, Some(scored(&first)[0].score));
    assert_eq!(
        batch_events.len(),
        4,
        "three orders (the repeated id counts once) and one score"
    );
    // The same batch again records nothing.
    let again = history_from(
        &[created(), batch_events].concat(),
        vec![at(
            ClientAction::PlaceOrders(PlaceOrders {
                orders: vec![placed("o2", "20.00", day(-300))],
                history: true,
            }),
            day(2),
        )],
    );
    assert!(again.is_empty());
}

#[test]
fn a_cancelled_order_stops_counting_and_cancelling_twice_records_once() {
    let given = [
        created(),
        history_from(
            &created(),
            vec![
                at(order("o1", "10.00", day(1)), day(1)),
                at(order("o2", "30.00", day(5)), day(5)),
            ],
        ),
    ]
    .concat();
    let cancel = || {
        ClientAction::CancelOrder(CancelOrder {
            order_id: OrderId::parse("o2").unwrap(),
            reason: Some(" refunded ".into()),
        })
    };
    let events = history_from(&given, vec![at(cancel(), day(6)), at(cancel(), day(7))]);
    let ClientEvent::OrderCancelled(cancelled) = &events[0] else {
        panic!("expected OrderCancelled, got {events:?}");
    };
    assert_eq!(cancelled.reason.as_deref(), Some("refunded"));
    assert_eq!(cancelled.amount_cents, 3_000);
    assert_eq!(cancelled.orders.order_count, 1);
    assert_eq!(cancelled.orders.total_spent_cents, 1_000);
    assert_eq!(cancelled.orders.average_order_value_cents, 1_000);
    assert_eq!(cancelled.orders.last_order_at, Some(day(1)));
    assert_eq!(cancelled.orders.first_order_at, Some(day(1)));
    assert!(!scored(&events).is_empty(), "the client is scored again");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ClientEvent::OrderCancelled(_)))
            .count(),
        1
    );
    // Placing the cancelled id again is a duplicate, not a new order.
    let after = [given.clone(), events].concat();
    assert!(history_from(&after, vec![at(order("o2", "30.00", day(5)), day(8))]).is_empty());
    // An unknown order names the field.
    let client = replay(&given);
    let error = client
        .decide(
            at(
                ClientAction::CancelOrder(CancelOrder {
                    order_id: OrderId::parse("nope").unwrap(),
                    reason: None,
                }),
                day(6),
            ),
            &services(),
        )
        .unwrap_err();
    assert!(matches!(error, ClientError::Validation(ref v) if v.field == "orderId"));
}

#[test]
fn an_external_id_is_recorded_once_and_never_changed() {
    let with_id = CreateUser {
        external_id: Some(ExternalId::parse(" C-17 ").unwrap()),
        client_since: Some(day(-900)),
        imported: false,
        ..create_user()
    };
    let events = history(vec![at(ClientAction::CreateUser(with_id.clone()), t0())]);
    let ClientEvent::UserCreated(created_event) = &events[0] else {
        panic!("expected UserCreated");
    };
    assert_eq!(created_event.external_id.as_deref(), Some("C-17"));
    let client = replay(&events);
    assert_eq!(client.external_id(), Some("C-17"));
    assert_eq!(client.created_at(), Some(day(-900)));
    // Creating again through the same external id is a no-op.
    assert!(history_from(&events, vec![at(ClientAction::CreateUser(with_id), t0())]).is_empty());
    // A client without one can be given one, once.
    let given = created();
    let give = |id: &str| {
        ClientAction::UpdateUser(UpdateUser {
            external_id: Some(ExternalId::parse(id).unwrap()),
            ..UpdateUser::default()
        })
    };
    let updated = history_from(
        &given,
        vec![at(give("C-9"), day(1)), at(give("C-9"), day(2))],
    );
    let ClientEvent::UserUpdated(update) = &updated[0] else {
        panic!("expected UserUpdated");
    };
    assert_eq!(update.changed, vec!["externalId".to_owned()]);
    assert_eq!(update.external_id.as_deref(), Some("C-9"));
    assert_eq!(
        updated
            .iter()
            .filter(|e| matches!(e, ClientEvent::UserUpdated(_)))
            .count(),
        1
    );
    let client = replay(&[given, updated].concat());
    let error = client
        .decide(at(give("C-10"), day(3)), &services())
        .unwrap_err();
    assert!(matches!(error, ClientError::Validation(ref v) if v.field == "externalId"));
}

#[test]
fn the_group_is_decided_at_creation_and_a_backfill_only_fills_what_is_missing() {
    let services = ClientServices {
        holdout: Holdout {
            salt: Uuid::from_u128(7),
            percent: 50,
        },
        ..services()
    };
    let expected = services.holdout.assign(user_id());
    let created = Client::default()
        .decide(at(ClientAction::CreateUser(create_user()), t0()), &services)
        .unwrap();
    assert!(matches!(&created[0], ClientEvent::UserCreated(e) if e.group == Some(expected)));
    let client = replay(&created);
    assert_eq!(client.group(), expected);
    // A later change of the setting moves nobody: the group is in the stream.
    assert_eq!(
        client
            .decide(
                at(
                    ClientAction::AssignGroup(EngagementGroup::Treatment),
                    day(1)
                ),
                &services
            )
            .unwrap(),
        vec![]
    );
    // A client created before the holdout existed is treatment until backfilled, once.
    let mut legacy = created.clone();
    if let ClientEvent::UserCreated(e) = &mut legacy[0] {
        e.group = None;
    }
    let legacy_client = replay(&legacy);
    assert_eq!(legacy_client.group(), EngagementGroup::Treatment);
    let assigned = legacy_client
        .decide(
            at(
                ClientAction::AssignGroup(EngagementGroup::Treatment),
                day(1),
            ),
            &services,
        )
        .unwrap();
    assert!(
        matches!(&assigned[..], [ClientEvent::GroupAssigned(e)] if e.group == EngagementGroup::Treatment)
    );
    let backfilled = replay(&[legacy, assigned].concat());
    assert!(backfilled
        .decide(
            at(
                ClientAction::AssignGroup(EngagementGroup::Treatment),
                day(2)
            ),
            &services
        )
        .unwrap()
        .is_empty());
}
