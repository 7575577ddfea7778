//! Password hashing with argon2id (the `argon2` crate's defaults: 19 MiB,
//! two passes, one lane, as OWASP recommends). Hashes are PHC strings, so
//! the parameters travel with each hash and can be raised later without
//! breaking existing users. Both functions are CPU-heavy by design: call
//! them from `spawn_blocking`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
#[error("hashing the password failed: {0}")]
pub struct HashError(String);

pub fn hash(password: &str) -> Result<String, HashError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `phc`; a malformed stored hash matches nothing.
pub fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_its_password_and_is_salted() {
        let a = hash("s3cret").expect("hash");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(!a.contains("s3cret"));
        assert!(verify(&a, "s3cret"));
        assert!(!verify(&a, "s3cret "));
        assert_ne!(a, hash("s3cret").expect("hash"), "salted");
        assert!(!verify("not a hash", "s3cret"));
    }
}
