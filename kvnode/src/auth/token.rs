//! Bearer tokens: JWTs signed with HMAC-SHA256 under the cluster's signing
//! key (created by the first `auth enable`, replicated with the auth
//! state), so any node verifies a token any other node issued. A token
//! names the user and the user's generation (see `User::generation`):
//! permissions are looked up on every request, so a role change applies at
//! once without retiring tokens, while a password change retires the
//! user's older tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub generation: u64,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired; authenticate again")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("signing a token failed: {0}")]
    Sign(String),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn mint(key: &[u8], user: &str, generation: u64, ttl: Duration) -> Result<String, TokenError> {
    let iat = now();
    let claims = Claims {
        sub: user.to_owned(),
        generation,
        iat,
        exp: iat + ttl.as_secs().max(1),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
    .map_err(|e| TokenError::Sign(e.to_string()))
}

/// Checks signature and expiry; the caller checks that the user and
/// generation still exist.
pub fn verify(key: &[u8], token: &str) -> Result<Claims, TokenError> {
    if key.is_empty() {
        return Err(TokenError::Invalid);
    }
    let mut v = Validation::new(Algorithm::HS256);
    // Nodes of one cluster share a clock within NTP error; a token is
    // short-lived and no grace is given past its expiry.
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &v)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_under_its_key_only() {
        let t = mint(&[7; 32], "alice", 3, Duration::from_secs(60)).expect("mint");
        let c = verify(&[7; 32], &t).expect("verify");
        assert_eq!((c.sub.as_str(), c.generation), ("alice", 3));
        assert_eq!(verify(&[8; 32], &t), Err(TokenError::Invalid));
        assert_eq!(verify(&[], &t), Err(TokenError::Invalid));
        let mut forged = t.clone();
        forged.insert(t.len() / 2, 'x');
        assert_eq!(verify(&[7; 32], &forged), Err(TokenError::Invalid));
    }

    #[test]
    fn an_expired_token_says_so() {
        let claims = Claims {
            sub: "bob".into(),
            generation: 1,
            iat: now() - 100,
            exp: now() - 10,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[1; 32]),
        )
        .expect("encode");
        assert_eq!(verify(&[1; 32], &t), Err(TokenError::Expired));
    }
}
