//! Personal data at rest: every client's personal fields are sealed with a key of their own,
//! and erasing the client deletes that key (crypto-shredding).
//!
//! - A client's data key is 32 random bytes, stored in `client_keys` wrapped (XChaCha20-Poly1305)
//!   under a key-encryption key derived from the master key (HKDF-SHA256), with the client id
//!   as associated data, so a wrapped key cannot be moved to another client.
//! - [`personal`] says which fields of which event (and of the aggregate's snapshot) are
//!   personal, and seals them into one `sealed` object per payload; the event's other fields
//!   (amounts, scores, times) stay readable for audits, indexes and the uplift report.
//! - Readers get the wrapped key with the events in the same statement and open the payload;
//!   a payload whose key is gone opens with its personal fields blank and says which they were.
//!
//! The views hold plain values (search needs them) and lose them when the client is erased.

pub mod erasure;
pub mod personal;
pub mod rotation;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::RngCore as _;
use sha2::Sha256;
use sqlx::PgExecutor;

/// Clients whose unwrapped keys a process keeps (the most recently used).
const CACHED_KEYS: usize = 50_000;

/// Nonce length of XChaCha20-Poly1305: random nonces this long never repeat in practice.
const NONCE_LEN: usize = 24;

/// The master key: 32 secret bytes from `MASTER_KEY` or `MASTER_KEY_FILE`.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

impl MasterKey {
    /// The master key with these bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random master key.
    pub fn generate() -> Self {
        let mut bytes = [0; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret bytes (to write a key file, or to derive other keys).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let mut out = [0; 32];
        Hkdf::<Sha256>::new(Some(b"engagement"), &self.0)
            .expand(info, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// The key of unsubscribe tokens (RFC 8058 links) derived from this master key.
    pub fn unsubscribe_token_secret(&self) -> [u8; 32] {
        self.derive(b"unsubscribe-token v1")
    }

    /// A public name for this key (16 hex digits derived from it, revealing nothing of it),
    /// stored beside every key it wraps, so that a server started with another master key
    /// says so instead of failing on every read.
    pub fn fingerprint(&self) -> String {
        let id = self.derive(b"master key fingerprint");
        id[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One client's data key.
#[derive(Clone)]
pub struct DataKey(Arc<XChaCha20Poly1305>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| anyhow::anyhow!("a data key must be 32 bytes"))?;
        Ok(Self(Arc::new(cipher)))
    }

    /// `plaintext` sealed with a fresh random nonce, bound to `aad`: nonce then ciphertext.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.0, aad, plaintext)
    }

    /// What [`DataKey::seal`] sealed with the same `aad`.
    ///
    /// # Errors
    /// The data was altered, sealed with another key, or for another `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        open_with(&self.0, aad, sealed)
    }
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 seals any message that fits in memory");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(sealed.len() > NONCE_LEN, "sealed data is too short");
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .map_err(|_| anyhow::anyhow!("sealed data does not open with this key"))
}

/// The associated data a client's wrapped key is bound to.
fn key_aad(client: &str) -> Vec<u8> {
    format!("client-key:{client}").into_bytes()
}

/// A key as `client_keys` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Nonce and ciphertext of the data key.
    pub wrapped: Vec<u8>,
    /// Which master key wrapped it ([`MasterKey::fingerprint`]).
    pub master: String,
}

/// Wraps and unwraps clients' data keys under the master key, and keeps the unwrapped keys of
/// recently used clients.
pub struct Vault {
    kek: XChaCha20Poly1305,
    fingerprint: String,
    /// Unwrapped keys by client, with the wrapped form they came from (a key read again is
    /// unwrapped again only if its stored form changed).
    cache: Mutex<lru::LruCache<String, (Vec<u8>, DataKey)>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("master", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault wrapping keys under `master`.
    pub fn new(master: &MasterKey) -> Self {
        Self {
            kek: XChaCha20Poly1305::new(&master.derive(b"client data keys").into()),
            fingerprint: master.fingerprint(),
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHED_KEYS).expect("non-zero"),
            )),
        }
    }

    /// The fingerprint of the master key this vault wraps with.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, (Vec<u8>, DataKey)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `key` wrapped for `client`.
    fn wrap(&self, client: &str, key: &[u8; 32]) -> WrappedKey {
        WrappedKey {
            wrapped: seal_with(&self.kek, &key_aad(client), key),
            master: self.fingerprint.clone(),
        }
    }

    /// The data key `wrapped` holds for `client` (from the cache when it was seen before).
    ///
    /// # Errors
    /// It was wrapped under another master key, for another client, or altered.
    pub fn unwrap(&self, client: &str, wrapped: &[u8]) -> anyhow::Result<DataKey> {
        if let Some((seen, key)) = self.cache().get(client) {
            if seen == wrapped {
                return Ok(key.clone());
            }
        }
        let bytes = open_with(&self.kek, &key_aad(client), wrapped).with_context(|| {
            format!(
                "the key of user {client} does not open with the master key {} \
                 (was the master key changed without `engagement keys rotate`?)",
                self.fingerprint
            )
        })?;
        let key = DataKey::from_bytes(&bytes)?;
        self.cache()
            .put(client.to_owned(), (wrapped.to_vec(), key.clone()));
        Ok(key)
    }

    /// Forgets `client`'s key in this process (after an erasure).
    pub fn forget(&self, client: &str) {
        self.cache().pop(client);
    }

    /// The data key of `client` for sealing new data: this process's, else the stored one,
    /// else a new one stored now (one statement; of two writers creating it at once, both
    /// end up with the one stored first).
    ///
    /// # Errors
    /// The database failed, or the stored key does not open with the master key.
    pub async fn key_for_writing<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        client: &str,
    ) -> anyhow::Result<DataKey> {
        let mut keys = self
            .keys_for_writing(executor, std::slice::from_ref(&client.to_owned()))
            .await?;
        keys.remove(client)
            .context("the data key statement returned no key")
    }

    /// [`Vault::key_for_writing`] for many clients, in at most one statement.
    ///
    /// # Errors
    /// The database failed, or a stored key does not open with the master key.
    pub async fn keys_for_writing<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        clients: &[String],
    ) -> anyhow::Result<HashMap<String, DataKey>> {
        let mut keys = HashMap::with_capacity(clients.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.cache();
            for client in clients {
                match cache.get(client) {
                    Some((_, key)) => {
                        keys.insert(client.clone(), key.clone());
                    }
                    None => missing.push(client.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(keys);
        }
        let wrapped: Vec<Vec<u8>> = missing
            .iter()
            .map(|client| {
                let mut fresh = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut fresh);
                self.wrap(client, &fresh).wrapped
            })
            .collect();
        // The upsert's no-op update makes every row come back, whether inserted now or there
        // before (then with the stored key, not ours).
        let stored: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "insert into client_keys (client_id, wrapped, master)
             select n.client_id, n.wrapped, $3 from unnest($1::text[], $2::bytea[]) as n(client_id, wrapped)
             on conflict (client_id) do update set client_id = excluded.client_id
             returning client_id, wrapped",
        )
        .bind(&missing)
        .bind(&wrapped)
        .bind(&self.fingerprint)
        .fetch_all(executor)
        .await
        .context("storing users' data keys")?;
        for (client, wrapped) in stored {
            let key = self.unwrap(&client, &wrapped)?;
            keys.insert(client, key);
        }
        Ok(keys)
    }

    /// The stored keys of `clients` that still have one (an erased client has none).
    ///
    /// # Errors
    /// The database failed, or a stored key does not open with the master key.
    pub async fn keys<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        clients: &[String],
    ) -> anyhow::Result<HashMap<String, DataKey>> {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("select client_id, wrapped from client_keys where client_id = any($1)")
                .bind(clients)
                .fetch_all(executor)
                .await
                .context("reading users' data keys")?;
        rows.into_iter()
            .map(|(client, wrapped)| {
                let key = self.unwrap(&client, &wrapped)?;
                Ok((client, key))
            })
            .collect()
    }

    /// Checks that the keys in the database were wrapped by this vault's master key.
    ///
    /// # Errors
    /// Some were wrapped by another master key: the server would fail on their clients.
    pub async fn check<'e>(&self, executor: impl PgExecutor<'e>) -> anyhow::Result<()> {
        let others: Vec<(String, i64)> = sqlx::query_as(
            "select master, count(*) from client_keys where master <> $1 group by master",
        )
        .bind(&self.fingerprint)
        .fetch_all(executor)
        .await
        .context("checking the users' data keys")?;
        if others.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = others
            .iter()
            .map(|(master, n)| format!("{n} under {master}"))
            .collect();
        anyhow::bail!(
            "the master key (fingerprint {}) is not the one the users' data keys are wrapped \
             with ({}): start with the right MASTER_KEY or MASTER_KEY_FILE, or finish \
             `engagement keys rotate`",
            self.fingerprint,
            listed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_client_under_its_master_key() {
        let master = MasterKey::new([7; 32]);
        let vault = Vault::new(&master);
        let key = [9u8; 32];
        let wrapped = vault.wrap("a", &key);
        assert_eq!(wrapped.master, master.fingerprint());
        assert_eq!(wrapped.master.len(), 16);
        let data = vault.unwrap("a", &wrapped.wrapped).unwrap();
        let sealed = data.seal(b"aad", b"Ada Lovelace");
        assert_eq!(data.open(b"aad", &sealed).unwrap(), b"Ada Lovelace");
        assert!(data.open(b"other", &sealed).is_err());
        assert!(!sealed.windows(3).any(|w| w == b"Ada"));

        assert!(Vault::new(&master).unwrap("b", &wrapped.wrapped).is_err());
        let other = Vault::new(&MasterKey::new([8; 32]));
        assert!(other.unwrap("a", &wrapped.wrapped).is_err());
        assert_ne!(other.fingerprint(), vault.fingerprint());
        let mut altered = wrapped.wrapped.clone();
        altered[30] ^= 1;
        assert!(Vault::new(&master).unwrap("a", &altered).is_err());
        assert!(format!("{master:?} {vault:?} {data:?}").len() < 120);
    }
}
