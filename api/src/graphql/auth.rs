//! Bearer tokens with roles. Tokens are kept only as SHA-256 digests: configured as digests,
//! and a token generated at start-up is hashed before it is stored.

use std::collections::HashMap;

use async_graphql::{Context, Guard};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::errors::ApiError;

/// What a token may do; each role includes the ones before it.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Queries and subscriptions.
    Viewer,
    /// Plus mutations.
    Operator,
    /// Plus destructive operations (delete, job retry).
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(async_graphql::SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(name = "Viewer")]
pub struct Principal {
    /// Their role.
    pub role: Role,
    /// How they appear in event metadata (`admin:<name>`).
    pub actor: String,
}

/// The accepted tokens, by digest.
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    by_digest: HashMap<[u8; 32], Principal>,
}

/// SHA-256 of a token, hex-encoded: the form tokens are configured in.
pub fn digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl TokenStore {
    /// Parses `role:name:sha256hex` entries separated by commas (the `API_TOKENS` setting).
    ///
    /// # Errors
    /// An entry that does not parse, named by its position (its digest is not echoed).
    pub fn parse(config: &str) -> anyhow::Result<Self> {
        let mut store = Self::default();
        for (i, entry) in config
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let mut parts = entry.splitn(3, ':');
            let (Some(role), Some(name), Some(hex_digest)) =
                (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("API_TOKENS entry {}: expected role:name:sha256-hex", i + 1);
            };
            let role = Role::parse(role).ok_or_else(|| {
                anyhow::anyhow!(
                    "API_TOKENS entry {}: role must be viewer, operator or admin",
                    i + 1
                )
            })?;
            let digest: [u8; 32] = hex::decode(hex_digest)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "API_TOKENS entry {}: the digest must be 64 hex digits (sha256)",
                        i + 1
                    )
                })?;
            store.by_digest.insert(
                digest,
                Principal {
                    role,
                    actor: format!("{}:{name}", role.as_str()),
                },
            );
        }
        Ok(store)
    }

    /// Adds a token (kept only as its digest).
    pub fn insert(&mut self, token: &str, principal: Principal) {
        self.by_digest
            .insert(Sha256::digest(token.as_bytes()).into(), principal);
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Who holds `token`, if anyone. Comparing digests: an attacker cannot steer a digest
    /// byte by byte, so the lookup's timing tells them nothing useful.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.by_digest.get(&digest).cloned()
    }

    /// Who sent a request with this `Authorization` header value.
    pub fn from_header(&self, value: Option<&str>) -> Option<Principal> {
        let value = value?.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        self.authenticate(token)
    }
}

/// Lets a field through only for `min` or a stronger role.
pub struct RoleGuard {
    min: Role,
}

impl RoleGuard {
    /// A guard requiring at least `min`.
    pub fn new(min: Role) -> Self {
        Self { min }
    }
}

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Principal>() {
            None => Err(ApiError::Unauthenticated.into()),
            Some(p) if p.role >= self.min => Ok(()),
            Some(p) => Err(ApiError::Forbidden(format!(
                "the {} role may not do this; it needs {}",
                p.role.as_str(),
                self.min.as_str()
            ))
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_digests_authenticate_their_tokens_only() {
        let config = format!(
            "operator:alice:{},viewer:bob:{}",
            digest_hex("a-token"),
            digest_hex("b-token")
        );
        let store = TokenStore::parse(&config).unwrap();
        assert_eq!(
            store.authenticate("a-token").unwrap().actor,
            "operator:alice"
        );
        assert_eq!(
            store.from_header(Some("Bearer b-token")).unwrap().role,
            Role::Viewer
        );
        assert!(store.authenticate("nope").is_none());
        assert!(
            store.from_header(Some("b-token")).is_none(),
            "the scheme is required"
        );
        assert!(TokenStore::parse("root:x:abc").is_err());
        let err = TokenStore::parse("admin:x:1234").unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
