//! Opaque Relay cursors: base64url of a small JSON value.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::errors::ApiError;

/// Most items a page may hold.
pub const MAX_PAGE: i64 = 200;
/// Items in a page when `first` is not given.
pub const DEFAULT_PAGE: i64 = 50;

/// Encodes a cursor.
pub fn encode(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes the cursor in argument `after`.
///
/// # Errors
/// `VALIDATION` on `after` when it is not a cursor of this list.
pub fn decode<T: DeserializeOwned>(after: &str) -> Result<T, ApiError> {
    URL_SAFE_NO_PAD
        .decode(after)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::validation("after", "not a cursor of this list"))
}

/// The page size for argument `first`: at most [`MAX_PAGE`].
///
/// # Errors
/// `VALIDATION` on `first` when negative.
pub fn page_size(first: Option<i32>) -> Result<i64, ApiError> {
    match first {
        Some(n) if n < 0 => Err(ApiError::validation("first", "must not be negative")),
        Some(n) => Ok(i64::from(n).min(MAX_PAGE)),
        None => Ok(DEFAULT_PAGE),
    }
}
