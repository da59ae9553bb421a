//! Ids in arguments: parsed once, at the edge, naming the argument that was not one.

use async_graphql::ID;
use uuid::Uuid;

use super::errors::{ApiError, ApiResult};

/// Parses an `ID!` argument that must be a UUID.
///
/// # Errors
/// `VALIDATION` naming `field`.
pub fn parse_id(id: &ID, field: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| ApiError::validation(field, "not a valid id"))
}
