//! The one-off backfill of the holdout: clients created before it have no group in their
//! stream. They were all eligible for emails, so each is recorded as `TREATMENT`
//! (`GroupAssigned`) rather than read through an upcast, which would take today's setting and
//! could move them later.

use anyhow::Context as _;
use domain::client::{ClientAction, ClientError, EngagementGroup};
use futures::StreamExt as _;
use uuid::Uuid;

use super::{CommandBus, CommandError, CommandMetadata};

/// Records every client without a group as `TREATMENT`; returns how many had none and how many
/// were recorded now (deleted clients are left alone; a second run finds none).
///
/// # Errors
/// The database failed, or a command did (the clients done so far stay done).
pub async fn backfill(bus: &CommandBus) -> anyhow::Result<(usize, usize)> {
    let legacy: Vec<String> = sqlx::query_scalar(
        "select c.aggregate_id from events c
          where c.aggregate_type = 'client' and c.event_type = 'UserCreated'
            and c.payload->'UserCreated'->'group' is null
            and not exists (select 1 from events g
                             where g.aggregate_type = 'client' and g.aggregate_id = c.aggregate_id
                               and g.event_type = 'GroupAssigned')",
    )
    .fetch_all(bus.pool())
    .await
    .context("finding clients without a group")?;
    let metadata = CommandMetadata::for_actor("backfill:groups");
    let results: Vec<anyhow::Result<usize>> = futures::stream::iter(legacy.iter())
        .map(|id| {
            let metadata = metadata.clone();
            async move {
                let id: Uuid = id.parse().context("a client id in the log")?;
                match bus
                    .execute(
                        id,
                        ClientAction::AssignGroup(EngagementGroup::Treatment),
                        &metadata,
                    )
                    .await
                {
                    Ok(_) => Ok(1),
                    // Nothing more happens to a deleted client: no group needed.
                    Err(CommandError::Rejected(ClientError::Deleted | ClientError::Erased)) => {
                        Ok(0)
                    }
                    Err(e) => Err(anyhow::anyhow!("client {id}: {e}")),
                }
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut recorded = 0;
    for result in results {
        recorded += result?;
    }
    Ok((legacy.len(), recorded))
}
