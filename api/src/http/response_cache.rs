//! Answers to read-model queries, kept until something they read changes.
//!
//! The `users` and `emails` views change only when their consumers commit a batch, and every
//! such commit moves the consumer's checkpoint in the same transaction (a rebuild's swap too).
//! Each request reads both checkpoints (one small query: the *token*). When the token has
//! moved since the cache last looked, the events between the old and the new checkpoints
//! (one indexed read, shared by every request that sees the same move) say which clients
//! changed and in which respect; only the answers that depend on them are dropped. An answer
//! depends on the clients it shows (a page's rows, a client asked for by id, whether found
//! or not) and on the respects of all clients that could change which clients it shows
//! (a users page sorted by score depends on every client's score, one by creation date only
//! on clients coming and going); an email list, on every email change; the summary, on
//! everything. Nothing is served stale: a mutation waits for its view before returning, so
//! the next query sees a new token and the events behind it; a write through another
//! instance moves the same checkpoints. A token that moved back, or a view rewritten without
//! moving, or more changes than are worth reading, empties the cache.
//!
//! Only queries whose every root field is a view read (`user`, `users`, `email`, `emails`,
//! `engagementSummary`) and that select no `history` (the log itself) are kept; answers with
//! errors are not.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use axum::body::Bytes;

pub use crate::graphql::dependencies::{aspect, Dependencies, Recorder};
use projections::log::position::LogPosition;
use sqlx::PgPool;
use uuid::Uuid;

/// Root fields answered from the views alone.
const VIEW_ROOTS: [&str; 5] = ["user", "users", "email", "emails", "engagementSummary"];

/// Fields that read something other than the views, wherever they appear.
const UNCACHEABLE_FIELDS: [&str; 1] = ["history"];

/// More changes than this between two tokens: the cache is emptied rather than sorted out.
const MOST_CHANGES: i64 = 10_000;

/// The clients that changed between two tokens, and in which respects in all.
#[derive(Debug, Default)]
struct Changes {
    clients: HashSet<Uuid>,
    aspects: u8,
}

impl Changes {
    fn hit(&self, deps: &Dependencies) -> bool {
        deps.touched_by(&self.clients, self.aspects)
    }
}

/// One view's checkpoint as the token carries it.
#[derive(Debug, Clone, PartialEq)]
struct Checkpoint {
    name: String,
    position: LogPosition,
    written: String,
}

/// The checkpoints in a token (`name@transaction/position/written,...`), `None` if it does
/// not read as one.
fn checkpoints(token: &str) -> Option<Vec<Checkpoint>> {
    token
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|entry| {
            let (name, rest) = entry.split_once('@')?;
            let mut parts = rest.splitn(3, '/');
            let transaction_id = parts.next()?.parse().ok()?;
            let global_position = parts.next()?.parse().ok()?;
            Some(Checkpoint {
                name: name.to_owned(),
                position: LogPosition {
                    transaction_id,
                    global_position,
                },
                written: parts.next()?.to_owned(),
            })
        })
        .collect()
}

/// How a new token stands to the cache's.
enum Move {
    /// The same.
    Same,
    /// Forward: the events each view applied in between tell what changed.
    Forward(Vec<Applied>),
    /// Behind the cache's (a request that read it before another moved the cache on).
    Behind,
    /// Anything else (first token, a view rewritten in place): start over.
    Unknown,
}

fn compare(old: &str, new: &str) -> Move {
    if old == new {
        return Move::Same;
    }
    let (Some(old), Some(new)) = (checkpoints(old), checkpoints(new)) else {
        return Move::Unknown;
    };
    if old.len() != new.len() || old.iter().zip(&new).any(|(o, n)| o.name != n.name) {
        return Move::Unknown;
    }
    let pairs: Vec<_> = old.iter().zip(&new).collect();
    if pairs.iter().any(|(o, n)| n.position < o.position) {
        return if pairs.iter().all(|(o, n)| n.position <= o.position) {
            Move::Behind
        } else {
            Move::Unknown
        };
    }
    if pairs
        .iter()
        .any(|(o, n)| n.position == o.position && n.written != o.written)
    {
        // Written again without moving: a rebuild's swap.
        return Move::Unknown;
    }
    Move::Forward(
        pairs
            .iter()
            .filter(|(o, n)| n.position > o.position)
            .map(|(o, n)| Applied {
                view: n.name.clone(),
                after: o.position,
                upto: n.position,
            })
            .collect(),
    )
}

/// The events a view applied between two tokens.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    view: String,
    after: LogPosition,
    upto: LogPosition,
}

impl Applied {
    /// Whether an event of `event_type` changed this view (the emails view changes only on
    /// what touches emails; the users view shows a little of everything).
    fn changed_by(&self, event_type: &str) -> bool {
        self.view != "emails" || aspect::of_event(event_type) & aspect::EMAILS != 0
    }
}

/// What changed in the views over `applied`, or `None` when it is too much to sort out.
async fn changes(pool: &PgPool, applied: &[Applied]) -> anyhow::Result<Option<Changes>> {
    let mut changes = Changes::default();
    for view in applied {
        let Some(events) =
            projections::log::changed_between(pool, view.after, view.upto, MOST_CHANGES).await?
        else {
            return Ok(None);
        };
        for (client, event_type) in events {
            if view.changed_by(&event_type) {
                changes.clients.insert(client);
                changes.aspects |= aspect::of_event(&event_type);
            }
        }
    }
    Ok(Some(changes))
}

/// The kept answers, all under one token.
#[derive(Debug)]
pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
    /// One request at a time brings the cache up to a new token.
    advancing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    answers: HashMap<String, Kept>,
    bytes: usize,
}

#[derive(Debug)]
struct Kept {
    answer: Bytes,
    deps: Dependencies,
    size: usize,
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` of answers.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner::default()),
            advancing: tokio::sync::Mutex::new(()),
        }
    }

    /// Brings the cache up to `token` (read from the database just now): drops the answers
    /// that depend on what changed since its own. `false` when `token` is older than the
    /// cache's: the request must neither read nor keep answers.
    pub async fn advance(&self, pool: &PgPool, token: &str) -> bool {
        if self.lock().token == token {
            return true;
        }
        let _turn = self.advancing.lock().await;
        let current = self.lock().token.clone();
        let changes = match compare(&current, token) {
            Move::Same => return true,
            Move::Behind => return false,
            Move::Unknown => None,
            Move::Forward(applied) => match changes(pool, &applied).await {
                Ok(changes) => changes,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "reading what changed; emptying the response cache"
                    );
                    None
                }
            },
        };
        let mut inner = self.lock();
        match changes {
            Some(changes) => {
                inner.answers.retain(|_, kept| !changes.hit(&kept.deps));
                inner.bytes = inner.answers.values().map(|k| k.size).sum();
            }
            None => {
                inner.answers.clear();
                inner.bytes = 0;
            }
        }
        inner.token = token.to_owned();
        true
    }

    /// The answer to `key` computed under `token`, if kept.
    pub fn get(&self, token: &str, key: &str) -> Option<Bytes> {
        let inner = self.lock();
        (inner.token == token)
            .then(|| inner.answers.get(key).map(|k| k.answer.clone()))
            .flatten()
    }

    /// Keeps `answer` for `key`, which depends on `deps`, if the cache still stands at the
    /// `token` it was computed under.
    pub fn put(&self, token: &str, key: String, answer: Bytes, deps: Dependencies) {
        let mut inner = self.lock();
        if inner.token != token {
            return;
        }
        let size = key.len() + answer.len() + deps.size();
        if inner.bytes + size <= self.max_bytes && !inner.answers.contains_key(&key) {
            inner.bytes += size;
            inner.answers.insert(key, Kept { answer, deps, size });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the operation `operation_name` of `doc` reads only the views.
pub fn reads_only_views(doc: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    let operation = doc
        .operations
        .iter()
        .find(|(name, _)| match operation_name {
            Some(wanted) => name.is_some_and(|n| n.as_str() == wanted),
            None => true,
        });
    let Some((_, operation)) = operation else {
        return false;
    };
    if operation.node.ty != OperationType::Query {
        return false;
    }
    let mut roots = Vec::new();
    if !collect_roots(&operation.node.selection_set.node, doc, &mut roots, 0) {
        return false;
    }
    roots.iter().all(|r| VIEW_ROOTS.contains(&r.as_str()))
        && !mentions_uncacheable(&operation.node.selection_set.node, doc, 0)
}

fn collect_roots(
    set: &SelectionSet,
    doc: &ExecutableDocument,
    roots: &mut Vec<String>,
    depth: usize,
) -> bool {
    if depth > 16 {
        return false;
    }
    set.items.iter().all(|item| match &item.node {
        Selection::Field(f) => {
            roots.push(f.node.name.node.to_string());
            true
        }
        Selection::InlineFragment(f) => {
            collect_roots(&f.node.selection_set.node, doc, roots, depth + 1)
        }
        Selection::FragmentSpread(s) => {
            doc.fragments
                .get(&s.node.fragment_name.node)
                .is_some_and(|frag| {
                    collect_roots(&frag.node.selection_set.node, doc, roots, depth + 1)
                })
        }
    })
}

fn mentions_uncacheable(set: &SelectionSet, doc: &ExecutableDocument, depth: usize) -> bool {
    if depth > 64 {
        return true;
    }
    set.items.iter().any(|item| match &item.node {
        Selection::Field(f) => {
            UNCACHEABLE_FIELDS.contains(&f.node.name.node.as_str())
                || mentions_uncacheable(&f.node.selection_set.node, doc, depth + 1)
        }
        Selection::InlineFragment(f) => {
            mentions_uncacheable(&f.node.selection_set.node, doc, depth + 1)
        }
        Selection::FragmentSpread(s) => doc
            .fragments
            .get(&s.node.fragment_name.node)
            .is_none_or(|frag| mentions_uncacheable(&frag.node.selection_set.node, doc, depth + 1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, operation: Option<&str>) -> bool {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        reads_only_views(&doc, operation)
    }

    #[test]
    fn only_pure_view_reads_are_kept() {
        assert!(check(
            "{ users(first: 5) { nodes { id emails { nodes { subject } } } } }",
            None
        ));
        assert!(check(
            "{ engagementSummary { users } email(id: \"x\") { user { name } } }",
            None
        ));
        assert!(check(
            "query A { ...F } fragment F on Query { users { totalCount } }",
            Some("A")
        ));
        assert!(!check(
            "{ users { nodes { history { totalCount } } } }",
            None
        ));
        assert!(!check(
            "{ users { nodes { ...H } } } fragment H on User { history { totalCount } }",
            None
        ));
        assert!(!check(
            "{ users { totalCount } emailJobs { totalCount } }",
            None
        ));
        assert!(!check("{ health { status } }", None));
        assert!(!check("{ viewer { actor } }", None));
        assert!(!check(
            "{ userHistory(userId: \"x\") { totalCount } }",
            None
        ));
        assert!(!check("{ __schema { types { name } } }", None));
        assert!(!check(
            "mutation { rescoreUser(userId: \"x\") { id } }",
            None
        ));
        assert!(!check(
            "query A { users { totalCount } } query B { health { status } }",
            Some("B")
        ));
        assert!(!check("{ ...Missing }", None));
    }

    fn token(users: i64, emails: i64) -> String {
        format!("emails@7/{emails}/100.5,users@7/{users}/100.5")
    }

    #[test]
    fn tokens_compare_by_their_checkpoints() {
        assert!(matches!(compare(&token(5, 5), &token(5, 5)), Move::Same));
        match compare(&token(5, 3), &token(9, 3)) {
            Move::Forward(applied) => {
                assert_eq!(applied.len(), 1, "only the users view moved");
                assert_eq!(applied[0].view, "users");
                assert_eq!(applied[0].after.global_position, 5);
                assert_eq!(applied[0].upto.global_position, 9);
                assert!(applied[0].changed_by("OrderPlaced"));
            }
            _ => panic!("forward"),
        }
        match compare(&token(5, 3), &token(5, 4)) {
            Move::Forward(applied) => {
                assert_eq!(applied[0].view, "emails");
                assert!(!applied[0].changed_by("OrderPlaced"));
                assert!(applied[0].changed_by("EmailGenerated"));
                assert!(applied[0].changed_by("UserErased"));
            }
            _ => panic!("forward"),
        }
        assert!(matches!(compare(&token(9, 4), &token(5, 3)), Move::Behind));
        assert!(matches!(compare(&token(9, 3), &token(5, 4)), Move::Unknown));
        assert!(matches!(compare("", &token(1, 1)), Move::Unknown));
        let rewritten = token(5, 5).replace("100.5", "200.5");
        assert!(matches!(compare(&token(5, 5), &rewritten), Move::Unknown));
    }

    #[test]
    fn a_change_drops_the_answers_that_depend_on_it_only() {
        let ada = Uuid::new_v4();
        let bob = Uuid::new_v4();
        let page = Dependencies::of([ada], aspect::MEMBERSHIP);
        let by_score = Dependencies::of([ada], aspect::MEMBERSHIP | aspect::SCORE);
        let bobs_order = Changes {
            clients: [bob].into(),
            aspects: aspect::of_event("OrderPlaced"),
        };
        assert!(!bobs_order.hit(&page), "another client's order");
        let bobs_score = Changes {
            clients: [bob].into(),
            aspects: aspect::of_event("UserScored"),
        };
        assert!(
            bobs_score.hit(&by_score),
            "another client's score, sorted by score"
        );
        assert!(!bobs_score.hit(&page));
        let adas_order = Changes {
            clients: [ada].into(),
            aspects: aspect::ORDERS,
        };
        assert!(adas_order.hit(&page), "a client it shows");
        let unknown = Changes {
            clients: [bob].into(),
            aspects: aspect::of_event("SomethingNew"),
        };
        assert!(unknown.hit(&page));
    }

    #[test]
    fn answers_are_kept_only_under_the_caches_token() {
        let cache = ResponseCache::new(1024);
        cache.lock().token = "t1".into();
        cache.put(
            "t1",
            "q".into(),
            Bytes::from_static(b"one"),
            Dependencies::default(),
        );
        assert_eq!(cache.get("t1", "q").as_deref(), Some(&b"one"[..]));
        assert_eq!(cache.get("t2", "q"), None);
        cache.put(
            "t0",
            "r".into(),
            Bytes::from_static(b"old"),
            Dependencies::default(),
        );
        assert_eq!(
            cache.get("t1", "r"),
            None,
            "computed under another token: not kept"
        );
        let big = Bytes::from(vec![b'x'; 2048]);
        cache.put("t1", "big".into(), big, Dependencies::default());
        assert_eq!(cache.get("t1", "big"), None, "over the budget: not kept");
    }
}
