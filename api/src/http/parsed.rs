//! Parsed GraphQL documents, kept by their text. A client sends the same few operations over
//! and over with other variables; parsing one with async-graphql's parser cost about a tenth
//! of the server's CPU under a stream of `placeOrder`, twice over (our own checks parse it
//! too). A kept document is cloned instead.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

/// Documents kept.
const KEPT: usize = 512;

/// A document longer than this is parsed every time (and not kept).
const LONGEST_KEPT: usize = 16 * 1024;

/// Parsed documents by their exact text (most recently used kept).
#[derive(Clone)]
pub struct ParsedQueries(Arc<Mutex<lru::LruCache<String, Arc<ExecutableDocument>>>>);

impl Default for ParsedQueries {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(KEPT).unwrap_or(NonZeroUsize::MIN),
        ))))
    }
}

impl std::fmt::Debug for ParsedQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedQueries").finish_non_exhaustive()
    }
}

impl ParsedQueries {
    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Arc<ExecutableDocument>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `query` parsed, from the kept ones or parsed now; `None` if it does not parse (the
    /// executor then reports the syntax error with its position).
    pub fn parse(&self, query: &str) -> Option<Arc<ExecutableDocument>> {
        if let Some(doc) = self.lock().get(query) {
            return Some(doc.clone());
        }
        let doc = Arc::new(async_graphql::parser::parse_query(query).ok()?);
        if query.len() <= LONGEST_KEPT {
            self.lock().put(query.to_owned(), doc.clone());
        }
        Some(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_gives_the_same_document_and_bad_text_none() {
        let parsed = ParsedQueries::default();
        let a = parsed.parse("{ users { totalCount } }").unwrap();
        let b = parsed.parse("{ users { totalCount } }").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "kept");
        assert!(parsed.parse("{ users { ").is_none());
    }
}
