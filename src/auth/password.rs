//! argon2id password hashing with the OWASP Password Storage Cheat Sheet parameters
//! (m = 19 MiB = 19456 KiB, t = 2, p = 1; RFC 9106 §4), computed in `spawn_blocking` behind a
//! semaphore so a login burst never stalls the executor (cases R11).
//!
//! Stored PHC strings are checked against a parameter [floor, ceiling] before verification, so a
//! seeded hash with hostile parameters (`m=4194304,t=50`) is refused instead of computed.
//! Unknown users cost one dummy verification, so timing does not reveal which accounts exist.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Longest accepted password in bytes (longer → 400 `password_too_long`).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted when setting one.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// OWASP argon2id memory cost (KiB).
pub const M_COST_KIB: u32 = 19_456;
/// OWASP argon2id time cost.
pub const T_COST: u32 = 2;
/// OWASP argon2id parallelism.
pub const P_COST: u32 = 1;
/// Ceiling on a stored hash's memory cost (KiB) — 256 MiB.
pub const MAX_M_COST_KIB: u32 = 262_144;
/// Ceiling on a stored hash's time cost.
pub const MAX_T_COST: u32 = 10;
/// Ceiling on a stored hash's parallelism.
pub const MAX_P_COST: u32 = 8;
/// How long a request waits for a hashing slot before 503 + `Retry-After`.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Hashing failures.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// All hashing slots stayed busy for [`QUEUE_WAIT`].
    #[error("password hashing is saturated")]
    Busy,
    /// Internal failure (never includes the password).
    #[error("password hashing failed: {0}")]
    Internal(String),
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| PasswordError::Internal(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hash synchronously (blocking; call from a blocking thread).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Internal(e.to_string()))
}

/// Whether a stored PHC string uses argon2id with parameters inside [floor, ceiling].
pub fn acceptable_phc(phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    if h.algorithm.as_str() != "argon2id" {
        return false;
    }
    let Ok(p) = Params::try_from(&h) else {
        return false;
    };
    (M_COST_KIB..=MAX_M_COST_KIB).contains(&p.m_cost())
        && (T_COST..=MAX_T_COST).contains(&p.t_cost())
        && (P_COST..=MAX_P_COST).contains(&p.p_cost())
}

/// Verify synchronously; false for a mismatch or an unacceptable stored hash.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    if !acceptable_phc(phc) {
        return false;
    }
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    // verify_password uses the parameters of the stored hash (checked above) and compares the
    // output in constant time.
    Argon2::default()
        .verify_password(password.as_bytes(), &h)
        .is_ok()
}

/// Generate a random one-time password: 24 chars from an unambiguous alphabet (~137 bits).
pub fn random_password() -> String {
    use rand::Rng;
    const A: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| A[rng.gen_range(0..A.len())] as char)
        .collect()
}

/// The hashing service shared by request handlers.
#[derive(Clone)]
pub struct Passwords {
    sem: Arc<Semaphore>,
    dummy: Arc<String>,
}

impl Passwords {
    /// Build with `concurrency` slots (0 = number of CPUs) and a dummy hash for unknown users.
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let n = if concurrency == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            concurrency
        };
        let dummy = hash_blocking(&random_password())?;
        Ok(Self {
            sem: Arc::new(Semaphore::new(n)),
            dummy: Arc::new(dummy),
        })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PasswordError> {
        let permit = tokio::time::timeout(QUEUE_WAIT, self.sem.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|e| PasswordError::Internal(e.to_string()))?;
        let r = tokio::task::spawn_blocking(move || {
            let r = f();
            drop(permit);
            r
        })
        .await
        .map_err(|e| PasswordError::Internal(e.to_string()))?;
        Ok(r)
    }

    /// Hash a new password off the executor.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, PasswordError> {
        self.blocking(move || hash_blocking(&password)).await?
    }

    /// Verify against `phc`, or against the dummy hash when `phc` is None (unknown user) — the
    /// result is then always false but costs the same time.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        let dummy = self.dummy.clone();
        self.blocking(move || match phc {
            Some(h) if acceptable_phc(&h) => verify_blocking(&password, &h),
            Some(_) => {
                // Hostile or legacy parameters: spend the normal cost, then refuse.
                let _ = verify_blocking(&password, &dummy);
                false
            }
            None => {
                let _ = verify_blocking(&password, &dummy);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owasp_parameters_and_roundtrip() {
        let h = hash_blocking("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking("correct horse battery", &h));
        assert!(!verify_blocking("wrong", &h));
    }

    #[test]
    fn hostile_parameters_refused() {
        let hostile =
            "$argon2id$v=19$m=4194304,t=50,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(!acceptable_phc(hostile));
        let weak =
            "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(!acceptable_phc(weak));
        assert!(!acceptable_phc(
            "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2g"
        ));
    }
}
