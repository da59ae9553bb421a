//! One error type for the API, and its mapping to GraphQL errors with `extensions.code`.
//!
//! Expected errors (validation, not found, conflict, auth) are shown to the caller as they are.
//! Unexpected ones are logged with their whole cause chain and reach the caller only as
//! `INTERNAL`, with no detail.

use async_graphql::ErrorExtensions as _;
use domain::client::ClientError;
use domain::values::ValidationError;
use projections::commands::CommandError;

/// Why an API call failed.
#[derive(Debug)]
pub enum ApiError {
    /// An input field is not acceptable.
    Validation {
        /// The input field's public name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such thing.
    NotFound(String),
    /// The state does not allow it (or concurrent writers won).
    Conflict(String),
    /// No valid token.
    Unauthenticated,
    /// The token's role may not do this.
    Forbidden(String),
    /// Too many requests.
    RateLimited,
    /// A dependency (the database) cannot be reached now; the caller may retry later.
    Unavailable(anyhow::Error),
    /// Something broke on our side.
    Internal(anyhow::Error),
}

impl ApiError {
    /// A validation error for `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "VALIDATION",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// The GraphQL error the caller sees.
    pub fn to_graphql(&self) -> async_graphql::Error {
        let message = match self {
            Self::Validation { field, message } => format!("{field}: {message}"),
            Self::NotFound(m) | Self::Conflict(m) | Self::Forbidden(m) => m.clone(),
            Self::Unauthenticated => "a valid bearer token is required".to_owned(),
            Self::RateLimited => "too many requests; slow down".to_owned(),
            Self::Unavailable(error) => {
                tracing::warn!(error = %format!("{error:#}"), "a dependency is unavailable");
                "the database cannot be reached; try again later".to_owned()
            }
            Self::Internal(error) => {
                tracing::error!(error = %format!("{error:#}"), "internal error");
                "internal error".to_owned()
            }
        };
        let code = self.code();
        let field = match self {
            Self::Validation { field, .. } => Some(field.clone()),
            _ => None,
        };
        async_graphql::Error::new(message).extend_with(|_, e| {
            e.set("code", code);
            if let Some(field) = &field {
                e.set("field", field.as_str());
            }
        })
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        error.to_graphql()
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Validation {
            field: e.field,
            message: e.message,
        }
    }
}

/// Whether a database error that says the server cannot be reached is anywhere in `e`'s chain.
fn says_unreachable(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .any(projections::commands::unreachable_database)
}

impl ApiError {
    /// The error for a failure shared by several callers (a batched load): the same code,
    /// with the cause chain as text.
    pub fn from_shared(e: &anyhow::Error) -> Self {
        let copy = anyhow::anyhow!("{e:#}");
        if says_unreachable(e) {
            Self::Unavailable(copy)
        } else {
            Self::Internal(copy)
        }
    }
}

impl From<anyhow::Error> for ApiError {
    /// `UNAVAILABLE` when the database cannot be reached, else `INTERNAL`.
    fn from(e: anyhow::Error) -> Self {
        if says_unreachable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Internal(e)
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::new(e).into()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Validation(v) => v.into(),
            ClientError::NotFound => Self::NotFound("user not found".into()),
            ClientError::EmailNotFound => Self::NotFound("email not found".into()),
            other @ (ClientError::AddressSuppressed | ClientError::EmailNotAllowed { .. }) => {
                Self::Conflict(other.to_string())
            }
            other @ (ClientError::AlreadyExists
            | ClientError::Deleted
            | ClientError::Erased
            | ClientError::Unsubscribed
            | ClientError::NotAtRisk
            | ClientError::EmailCooldown { .. }) => Self::Conflict(other.to_string()),
        }
    }
}

impl From<projections::log::consumer::NotCaughtUp> for ApiError {
    /// The write is in the log, but the view that answers it has not caught up in time (the
    /// database is down or the consumer is far behind): the caller may retry (commands are
    /// idempotent) or read again later.
    fn from(e: projections::log::consumer::NotCaughtUp) -> Self {
        Self::Unavailable(
            anyhow::Error::new(e).context("the change is recorded but not visible yet"),
        )
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rejected(e) => e.into(),
            CommandError::Conflict => Self::Conflict(CommandError::Conflict.to_string()),
            CommandError::Unavailable(e) => Self::Unavailable(e),
            CommandError::Unexpected(e) => e.into(),
        }
    }
}

/// Result of API code.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_unavailable_and_a_failed_statement_is_internal() {
        let down = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("listing users");
        assert_eq!(ApiError::from(down).code(), "UNAVAILABLE");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ApiError::from(sqlx::Error::Io(refused)).code(),
            "UNAVAILABLE"
        );
        let broken = sqlx::Error::RowNotFound;
        assert_eq!(ApiError::from(broken).code(), "INTERNAL");
        let message = ApiError::from(sqlx::Error::PoolTimedOut)
            .to_graphql()
            .message;
        assert!(
            !message.contains("pool"),
            "no detail reaches the caller: {message}"
        );
    }
}
