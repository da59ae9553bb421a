//! One-off key work: a new master key for every wrapped key, and sealing data written before
//! encryption existed.

use anyhow::Context as _;
use sqlx::PgPool;

use super::erasure::{self, Sealed};
use super::personal::{
    field_names, EVENT_IN_THE_CLEAR, PERSONAL_EVENT_TYPES, SNAPSHOT, SNAPSHOT_IN_THE_CLEAR,
};
use super::{MasterKey, Vault};

/// What a rotation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotated {
    /// Clients' data keys rewrapped.
    pub client_keys: u64,
    /// Unsubscribe-token keys of earlier master keys kept (rewrapped, and the old one added).
    pub token_keys: u64,
}

fn token_aad(master: &str) -> Vec<u8> {
    format!("retired-token-key:{master}").into_bytes()
}

/// Rewraps every client's data key from `old` to `new` in one transaction, and keeps `old`'s
/// unsubscribe-token key (wrapped under `new`) so that links in emails already sent keep
/// working. Keys already under `new` are left as they are, so a rotation that was interrupted
/// can be run again.
///
/// # Errors
/// The database failed, or a key opens with neither master key.
pub async fn rotate(pool: &PgPool, old: &MasterKey, new: &MasterKey) -> anyhow::Result<Rotated> {
    anyhow::ensure!(
        old.fingerprint() != new.fingerprint(),
        "the new master key is the current one"
    );
    let (from, to) = (Vault::new(old), Vault::new(new));
    let mut tx = pool.begin().await.context("starting the rotation")?;
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "select client_id, wrapped from client_keys where master = $1 order by client_id for update",
    )
    .bind(old.fingerprint())
    .fetch_all(&mut *tx)
    .await
    .context("reading the users' data keys")?;
    let mut rotated = Rotated::default();
    for chunk in rows.chunks(5_000) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut wrapped = Vec::with_capacity(chunk.len());
        for (client, stored) in chunk {
            let bytes = super::open_with(&from.kek, &super::key_aad(client), stored)
                .with_context(|| format!("the key of user {client} does not open"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("the key of user {client} is not 32 bytes"))?;
            ids.push(client.clone());
            wrapped.push(to.wrap(client, &key).wrapped);
        }
        let updated = sqlx::query(
            "update client_keys k set wrapped = n.wrapped, master = $3
               from unnest($1::text[], $2::bytea[]) as n(client_id, wrapped)
              where k.client_id = n.client_id",
        )
        .bind(&ids)
        .bind(&wrapped)
        .bind(new.fingerprint())
        .execute(&mut *tx)
        .await
        .context("rewrapping the users' data keys")?;
        rotated.client_keys += updated.rows_affected();
    }
    // The retired token keys, rewrapped, and the old master's own.
    let retired: Vec<(String, Vec<u8>)> =
        sqlx::query_as("select master, wrapped from retired_token_keys for update")
            .fetch_all(&mut *tx)
            .await
            .context("reading the retired token keys")?;
    let mut keep: Vec<(String, [u8; 32])> = Vec::new();
    for (master, wrapped) in retired {
        let aad = token_aad(&master);
        let bytes = super::open_with(&from.kek, &aad, &wrapped)
            .or_else(|_| super::open_with(&to.kek, &aad, &wrapped))
            .with_context(|| format!("the retired token key of {master} does not open"))?;
        let key = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("a retired token key is not 32 bytes"))?;
        keep.push((master, key));
    }
    keep.push((old.fingerprint(), old.unsubscribe_token_secret()));
    for (master, key) in &keep {
        sqlx::query(
            "insert into retired_token_keys (master, wrapped) values ($1, $2)
             on conflict (master) do update set wrapped = excluded.wrapped",
        )
        .bind(master)
        .bind(super::seal_with(&to.kek, &token_aad(master), key))
        .execute(&mut *tx)
        .await
        .context("keeping the retired token keys")?;
        rotated.token_keys += 1;
    }
    tx.commit().await.context("committing the rotation")?;
    Ok(rotated)
}

/// The unsubscribe-token keys of earlier master keys, for links sent before a rotation.
///
/// # Errors
/// The database failed, or a key does not open with `master`.
pub async fn retired_token_keys(
    pool: &PgPool,
    master: &MasterKey,
) -> anyhow::Result<Vec<[u8; 32]>> {
    let vault = Vault::new(master);
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("select master, wrapped from retired_token_keys order by retired_at")
            .fetch_all(pool)
            .await
            .context("reading the retired token keys")?;
    rows.into_iter()
        .map(|(old, wrapped)| {
            let bytes = super::open_with(&vault.kek, &token_aad(&old), &wrapped)
                .with_context(|| format!("the retired token key of {old} does not open"))?;
            bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("a retired token key is not 32 bytes"))
        })
        .collect()
}

/// What sealing data from before encryption changed, in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealedAll {
    /// Clients with something in the clear.
    pub clients: u64,
    /// Of them, clients already erased (their data sealed and the key deleted at once).
    pub erased: u64,
    /// Rows rewritten.
    pub sealed: Sealed,
}

/// Seals, client by client (one transaction each, so it can stop and start again), every
/// personal field `events` and `snapshots` still hold in the clear. A client erased before
/// its data was sealed loses the key made for it in the same transaction.
///
/// # Errors
/// The database failed.
pub async fn seal_existing(pool: &PgPool, vault: &Vault) -> anyhow::Result<SealedAll> {
    let clients: Vec<String> = sqlx::query_scalar(&format!(
        "select distinct aggregate_id from events where aggregate_type = 'client' and {EVENT_IN_THE_CLEAR}
         union
         select aggregate_id from snapshots where aggregate_type = 'client' and {SNAPSHOT_IN_THE_CLEAR}"
    ))
    .bind(PERSONAL_EVENT_TYPES)
    .bind(field_names(PERSONAL_EVENT_TYPES))
    .bind(field_names(&[SNAPSHOT]))
    .fetch_all(pool)
    .await
    .context("finding data in the clear")?;
    let mut all = SealedAll::default();
    for client in clients {
        let mut tx = pool.begin().await.context("starting to seal a user")?;
        let sealed = erasure::seal_plain_of(&mut tx, vault, &client).await?;
        let erased: bool = sqlx::query_scalar(
            "select exists (select 1 from events where aggregate_type = 'client'
                              and aggregate_id = $1 and event_type = 'UserErased')",
        )
        .bind(&client)
        .fetch_one(&mut *tx)
        .await
        .context("checking for an erasure")?;
        if erased {
            erasure::shred(&mut tx, vault, &client).await?;
        }
        tx.commit().await.context("sealing a user")?;
        if erased {
            vault.forget(&client);
            all.erased += 1;
        }
        if sealed != Sealed::default() {
            all.clients += 1;
        }
        all.sealed.events += sealed.events;
        all.sealed.snapshots += sealed.snapshots;
    }
    Ok(all)
}

/// How many events and snapshots still hold personal fields in the clear.
///
/// # Errors
/// The database failed.
pub async fn in_the_clear(pool: &PgPool) -> anyhow::Result<Sealed> {
    let (events, snapshots): (i64, i64) = sqlx::query_as(&format!(
        "select (select count(*) from events where aggregate_type = 'client' and {EVENT_IN_THE_CLEAR}),
                (select count(*) from snapshots where aggregate_type = 'client' and {SNAPSHOT_IN_THE_CLEAR})"
    ))
    .bind(PERSONAL_EVENT_TYPES)
    .bind(field_names(PERSONAL_EVENT_TYPES))
    .bind(field_names(&[SNAPSHOT]))
    .fetch_one(pool)
    .await
    .context("counting data in the clear")?;
    Ok(Sealed {
        events: events.try_into().unwrap_or_default(),
        snapshots: snapshots.try_into().unwrap_or_default(),
    })
}
