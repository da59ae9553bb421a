//! Answers to read-model queries, kept until the read models move.
//!
//! The `users` and `emails` views change only when their consumers commit a batch, and every
//! such commit moves the consumer's checkpoint in the same transaction (a rebuild's swap too).
//! So a query that reads nothing but those views has the same answer for as long as both
//! checkpoints stand still. Each request reads them (one small query: the *token*); a cached
//! answer is served only under the token it was computed under, and the first answer under a
//! new token empties the cache. Nothing is served stale for longer than it takes the views
//! themselves to change: a mutation waits for its view before returning, so the next query sees
//! a new token; a write through another instance moves the same rows.
//!
//! Only queries whose every root field is a view read (`user`, `users`, `email`, `emails`,
//! `engagementSummary`) and that select no `history` (the log itself) are kept; answers with
//! errors are not.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use axum::body::Bytes;

/// Root fields answered from the views alone.
const VIEW_ROOTS: [&str; 5] = ["user", "users", "email", "emails", "engagementSummary"];

/// Fields that read something other than the views, wherever they appear.
const UNCACHEABLE_FIELDS: [&str; 1] = ["history"];

/// The kept answers, all under one token.
#[derive(Debug)]
pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    answers: HashMap<String, Bytes>,
    bytes: usize,
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` of answers.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The answer to `key` computed under `token`, if kept.
    pub fn get(&self, token: &str, key: &str) -> Option<Bytes> {
        let inner = self.lock();
        (inner.token == token)
            .then(|| inner.answers.get(key).cloned())
            .flatten()
    }

    /// Keeps `answer` for `key` under `token` (which replaces every answer of another token).
    pub fn put(&self, token: String, key: String, answer: Bytes) {
        let mut inner = self.lock();
        if inner.token != token {
            *inner = Inner {
                token,
                ..Inner::default()
            };
        }
        let size = key.len() + answer.len();
        if inner.bytes + size <= self.max_bytes && !inner.answers.contains_key(&key) {
            inner.bytes += size;
            inner.answers.insert(key, answer);
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

    #[test]
    fn answers_live_only_under_their_token() {
        let cache = ResponseCache::new(1024);
        cache.put("t1".into(), "q".into(), Bytes::from_static(b"one"));
        assert_eq!(cache.get("t1", "q").as_deref(), Some(&b"one"[..]));
        assert_eq!(cache.get("t2", "q"), None);
        cache.put("t2".into(), "r".into(), Bytes::from_static(b"two"));
        assert_eq!(cache.get("t1", "q"), None, "a new token empties the cache");
        assert_eq!(cache.get("t2", "r").as_deref(), Some(&b"two"[..]));
        let big = Bytes::from(vec![b'x'; 2048]);
        cache.put("t2".into(), "big".into(), big);
        assert_eq!(cache.get("t2", "big"), None, "over the budget: not kept");
    }
}
