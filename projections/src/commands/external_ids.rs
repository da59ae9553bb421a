//! The reservation that keeps external ids unique (`client_external_ids`, see its migration).
//!
//! A writer claims an external id before it writes the client's stream. The claim is one
//! `insert .. on conflict do nothing`: of any number of concurrent claimants exactly one row
//! wins, and every other claimant reads the winner's client id and writes to that stream, where
//! creation is idempotent. So the same external id always reaches the same client, whatever
//! the interleaving, and no lock is held across the command.

use std::collections::HashMap;

use anyhow::Context as _;
use domain::client::{ClientAction, CreateUser, Lifecycle, UpdateUser};
use domain::values::{ExternalId, ValidationError};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{CommandBus, CommandError, CommandMetadata, Committed};

/// What claiming an external id for a client found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The external id names this client from now on.
    New,
    /// The external id named this client already.
    Ours,
    /// It names another client.
    Taken(Uuid),
    /// This client already has another external id.
    ClientHasAnother,
}

/// The client `external_id` names, if any.
///
/// # Errors
/// The database failed.
pub async fn resolve<'e>(
    executor: impl PgExecutor<'e>,
    external_id: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("select user_id from client_external_ids where external_id = $1")
        .bind(external_id)
        .fetch_optional(executor)
        .await
}

/// The clients some of `external_ids` name (those that name one).
///
/// # Errors
/// The database failed.
pub async fn resolve_many<'e>(
    executor: impl PgExecutor<'e>,
    external_ids: &[&str],
) -> anyhow::Result<HashMap<String, Uuid>> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "select external_id, user_id from client_external_ids where external_id = any($1)",
    )
    .bind(external_ids)
    .fetch_all(executor)
    .await
    .context("resolving external ids")?;
    Ok(rows.into_iter().collect())
}

/// Claims `external_id` for client `user_id`.
///
/// # Errors
/// The database failed.
pub async fn claim<'e>(
    executor: impl PgExecutor<'e> + Copy,
    external_id: &str,
    user_id: Uuid,
) -> sqlx::Result<Claim> {
    for _ in 0..3 {
        let inserted = sqlx::query(
            "insert into client_external_ids (external_id, user_id) values ($1, $2)
             on conflict (external_id) do nothing",
        )
        .bind(external_id)
        .bind(user_id)
        .execute(executor)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => return Ok(Claim::New),
            Ok(_) => {}
            // The other unique key: this client already has an external id.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                return Ok(Claim::ClientHasAnother)
            }
            Err(e) => return Err(e),
        }
        // Someone holds it; a claim moved or released in between is looked up again.
        if let Some(owner) = resolve(executor, external_id).await? {
            return Ok(if owner == user_id {
                Claim::Ours
            } else {
                Claim::Taken(owner)
            });
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "the claim on external id {external_id:?} kept moving"
    )))
}

/// Claims each `(external_id, candidate)` pair in one statement and returns the client every
/// external id names afterwards: the candidate where the claim was new, the earlier owner
/// where it was not. A candidate client that already has another external id loses its pair
/// (it is missing from the answer).
///
/// # Errors
/// The database failed.
pub async fn claim_many<'e>(
    executor: impl PgExecutor<'e> + Copy,
    pairs: &[(String, Uuid)],
) -> anyhow::Result<HashMap<String, Uuid>> {
    let (ids, users): (Vec<&str>, Vec<Uuid>) = pairs.iter().map(|(e, u)| (e.as_str(), *u)).unzip();
    sqlx::query(
        "insert into client_external_ids (external_id, user_id)
         select external_id, user_id from unnest($1::text[], $2::uuid[]) as c(external_id, user_id)
         on conflict do nothing",
    )
    .bind(&ids)
    .bind(&users)
    .execute(executor)
    .await
    .context("claiming external ids")?;
    resolve_many(executor, &ids).await
}

/// Moves `external_id` from client `from` (deleted or erased) to client `to`; false if the
/// claim was no longer `from`'s.
///
/// # Errors
/// The database failed.
pub async fn reassign<'e>(
    executor: impl PgExecutor<'e>,
    external_id: &str,
    from: Uuid,
    to: Uuid,
) -> sqlx::Result<bool> {
    let moved = sqlx::query(
        "update client_external_ids set user_id = $3, claimed_at = now()
          where external_id = $1 and user_id = $2",
    )
    .bind(external_id)
    .bind(from)
    .bind(to)
    .execute(executor)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Gives up client `user_id`'s claim on `external_id` (its command was refused).
///
/// # Errors
/// The database failed.
pub async fn release<'e>(
    executor: impl PgExecutor<'e>,
    external_id: &str,
    user_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("delete from client_external_ids where external_id = $1 and user_id = $2")
        .bind(external_id)
        .bind(user_id)
        .execute(executor)
        .await?;
    Ok(())
}

fn database(error: sqlx::Error) -> CommandError {
    if super::unreachable_database(&error) {
        CommandError::Unavailable(error.into())
    } else {
        CommandError::Unexpected(anyhow::Error::new(error).context("claiming an external id"))
    }
}

fn taken() -> CommandError {
    ValidationError::new("externalId", "another user already has this external id").into()
}

fn has_another() -> CommandError {
    ValidationError::new(
        "externalId",
        "this user already has another external id; it cannot be changed",
    )
    .into()
}

impl From<ValidationError> for CommandError {
    fn from(error: ValidationError) -> Self {
        Self::Rejected(error.into())
    }
}

impl CommandBus {
    /// Creates a client, through its external id when it has one: the same external id
    /// always reaches the same client, so creating it again is a no-op (or `AlreadyExists`
    /// with different data), and concurrent creations make one client. An external id whose
    /// client was deleted names a new client.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub async fn create_user(
        &self,
        mut create: CreateUser,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let Some(external_id) = create.external_id.clone() else {
            return self
                .execute(create.id, ClientAction::CreateUser(create), metadata)
                .await;
        };
        for _ in 0..4 {
            match claim(&self.pool, external_id.as_str(), create.id)
                .await
                .map_err(database)?
            {
                Claim::New | Claim::Ours => {}
                // A fresh id never has a claim; only a caller reusing an id gets here.
                Claim::ClientHasAnother => return Err(has_another()),
                Claim::Taken(owner) => {
                    let client = self.load(owner).await?;
                    if matches!(client.lifecycle(), Lifecycle::Deleted | Lifecycle::Erased) {
                        // The person left and came back: a new client, a new stream.
                        reassign(&self.pool, external_id.as_str(), owner, create.id)
                            .await
                            .map_err(database)?;
                        continue;
                    }
                    create.id = owner;
                }
            }
            return self
                .execute(create.id, ClientAction::CreateUser(create), metadata)
                .await;
        }
        Err(CommandError::Conflict)
    }

    /// Changes a client; an external id given to a client without one is claimed first, and
    /// given up again if the change is refused.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub async fn update_user(
        &self,
        user_id: Uuid,
        update: UpdateUser,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let Some(external_id) = update.external_id.clone() else {
            return self
                .execute(user_id, ClientAction::UpdateUser(update), metadata)
                .await;
        };
        let claimed = self.claim_for(&external_id, user_id).await?;
        let result = self
            .execute(user_id, ClientAction::UpdateUser(update), metadata)
            .await;
        if result.is_err() && claimed == Claim::New {
            release(&self.pool, external_id.as_str(), user_id)
                .await
                .map_err(database)?;
        }
        result
    }

    /// Claims `external_id` for existing client `user_id`, taking it over from a deleted
    /// client.
    async fn claim_for(
        &self,
        external_id: &ExternalId,
        user_id: Uuid,
    ) -> Result<Claim, CommandError> {
        for _ in 0..4 {
            match claim(&self.pool, external_id.as_str(), user_id)
                .await
                .map_err(database)?
            {
                Claim::ClientHasAnother => return Err(has_another()),
                Claim::Taken(owner) => {
                    if !matches!(
                        self.load(owner).await?.lifecycle(),
                        Lifecycle::Deleted | Lifecycle::Erased
                    ) {
                        return Err(taken());
                    }
                    reassign(&self.pool, external_id.as_str(), owner, user_id)
                        .await
                        .map_err(database)?;
                }
                claimed => return Ok(claimed),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The client `external_id` names, if any.
    ///
    /// # Errors
    /// The database failed.
    pub async fn resolve_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<Uuid>, CommandError> {
        resolve(&self.pool, external_id).await.map_err(database)
    }
}
