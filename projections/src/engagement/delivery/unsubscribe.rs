//! Unforgeable unsubscribe tokens (RFC 8058 one-click links).
//!
//! A token names the client and the email whose link it is, and carries an HMAC-SHA256 tag
//! (truncated to 128 bits) under a key derived from the master key with HKDF (RFC 5869), so it
//! keeps working across restarts, instances and rebuilds, and nobody without the master key can
//! make one. It is URL-safe base64 without padding: `v1 | user id | email id | tag`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = 1 + 16 + 16 + TAG_LEN;

/// The key of the unsubscribe tokens, with the keys of earlier master keys (tokens they made
/// still verify; new tokens use the current key).
#[derive(Clone)]
pub struct TokenKey([u8; 32], Vec<[u8; 32]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// The token key derived from the 32-byte master key.
    pub fn derive(master_key: &[u8; 32]) -> Self {
        let master = crate::vault::MasterKey::new(*master_key);
        Self(master.unsubscribe_token_secret(), Vec::new())
    }

    /// This key, also accepting tokens made with `retired` keys.
    #[must_use]
    pub fn with_retired(self, retired: Vec<[u8; 32]>) -> Self {
        Self(self.0, retired)
    }

    fn mac(&self) -> Hmac<Sha256> {
        mac_with(&self.0)
    }

    /// The token for `email_id`'s link, sent to `user_id`.
    pub fn token(&self, user_id: Uuid, email_id: Uuid) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(user_id.as_bytes());
        bytes.extend_from_slice(email_id.as_bytes());
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The client and email a genuine token names; `None` for anything else (checked in
    /// constant time).
    pub fn verify(&self, token: &str) -> Option<(Uuid, Uuid)> {
        if token.len() > 128 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        if bytes.len() != TOKEN_LEN || bytes[0] != VERSION {
            return None;
        }
        let (body, tag) = bytes.split_at(1 + 32);
        let genuine = std::iter::once(&self.0).chain(&self.1).any(|key| {
            let mut mac = mac_with(key);
            mac.update(body);
            mac.verify_truncated_left(tag).is_ok()
        });
        if !genuine {
            return None;
        }
        let user = Uuid::from_slice(&body[1..17]).ok()?;
        let email = Uuid::from_slice(&body[17..33]).ok()?;
        Some((user, email))
    }
}

fn mac_with(key: &[u8; 32]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_client_and_email_and_nothing_else_verifies() {
        let key = TokenKey::derive(&[7; 32]);
        let (user, email) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let token = key.token(user, email);
        assert_eq!(key.verify(&token), Some((user, email)));
        // The same master key gives the same token (restarts, instances).
        assert_eq!(TokenKey::derive(&[7; 32]).token(user, email), token);
        assert_eq!(TokenKey::derive(&[8; 32]).verify(&token), None);
        // Any changed character is refused.
        for i in 0..token.len() {
            let mut t: Vec<char> = token.chars().collect();
            t[i] = if t[i] == 'A' { 'B' } else { 'A' };
            let t: String = t.into_iter().collect();
            assert_eq!(key.verify(&t), None, "tampered at {i}");
        }
        assert_eq!(key.verify(""), None);
        assert_eq!(key.verify("not a token"), None);
    }
}
