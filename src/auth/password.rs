//! argon2id password hashing with the OWASP Password Storage Cheat Sheet parameters
//! (m = 19 MiB = 19456 KiB, t = 2, p = 1; RFC 9106 §4), computed on dedicated threads behind a
//! semaphore so a login burst never stalls the executor (cases R11).
//!
//! Stored PHC strings are checked against a parameter [floor, ceiling] before verification, so a
//! seeded hash with hostile parameters (`m=4194304,t=50`) is refused instead of computed.
//! Unknown users cost one dummy verification, so timing does not reveal which accounts exist.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::workers::LowPriority;

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

thread_local! {
    /// Set on the dedicated hashing threads only: they keep one argon2 block array between
    /// verifications (any other thread allocates per call, so no stray 19 MiB stays behind).
    static KEEP_BLOCKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verify synchronously; false for a mismatch or an unacceptable stored hash.
///
/// Computes argon2id with the stored hash's own parameters (checked against the floor and
/// ceiling first) and salt, then compares the output with the stored one in constant time
/// (`crypto::ct_eq`) — what `PasswordVerifier::verify_password` does, but into a block array the
/// hashing thread keeps (`hash_password_into_with_memory`): allocating a fresh 19 MiB array per
/// login meant a page fault per 4 KiB page, and the kernel zeroing those pages was 46% of the
/// server's CPU in a login storm (issue 12 P5 profile). The array is zeroised after every use.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    if !acceptable_phc(phc) {
        return false;
    }
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let Ok(version) = Version::try_from(h.version.unwrap_or(0x13)) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, version, params);
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let mut run = |mem: &mut [argon2::Block]| {
        let ok = argon
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut *mem)
            .is_ok();
        for b in mem.iter_mut() {
            *b = argon2::Block::default();
        }
        ok
    };
    let computed = if KEEP_BLOCKS.with(|k| k.get()) {
        BLOCKS.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() < blocks {
                m.resize(blocks, argon2::Block::default());
            }
            run(&mut m[..blocks])
        })
    } else {
        run(&mut vec![argon2::Block::default(); blocks])
    };
    computed && crate::crypto::ct_eq(&out, expected.as_bytes())
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

/// Nice value of the hashing threads ([`crate::workers::LOW_PRIORITY_NICE`]): argon2id work
/// yields the CPU to the HTTP workers (nice 0) whenever they have something to do, so a login
/// storm does not stretch every other request's latency, while idle cores still go to hashing
/// (issue 12 P5: `/healthz` p99 during 32 concurrent logins).
pub const HASH_THREAD_NICE: i32 = crate::workers::LOW_PRIORITY_NICE;

/// Marks a hashing thread: its argon2 blocks are kept between hashes.
fn hashing_thread() {
    KEEP_BLOCKS.with(|k| k.set(true));
}

/// The hashing service shared by request handlers.
#[derive(Clone)]
pub struct Passwords {
    sem: Arc<Semaphore>,
    workers: LowPriority,
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
            workers: LowPriority::start("argon2", n, n, hashing_thread)
                .map_err(|e| PasswordError::Internal(e.to_string()))?,
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
        // At most `n` jobs are in flight (one per permit) and the channel holds `n`, so the
        // send never blocks the executor.
        let (done, result) = tokio::sync::oneshot::channel();
        self.workers
            .try_send(Box::new(move || {
                let _ = done.send(f());
                drop(permit);
            }))
            .map_err(|_| PasswordError::Internal("hashing workers unavailable".into()))?;
        result
            .await
            .map_err(|e| PasswordError::Internal(e.to_string()))
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
    fn verification_agrees_with_the_library_verifier() {
        use argon2::password_hash::PasswordVerifier as _;
        let h = hash_blocking("correct horse battery").unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        for (pw, want) in [
            ("correct horse battery", true),
            ("correct horse batterY", false),
            ("", false),
        ] {
            let lib = Argon2::default()
                .verify_password(pw.as_bytes(), &parsed)
                .is_ok();
            assert_eq!(lib, want, "{pw}");
            assert_eq!(verify_blocking(pw, &h), want, "{pw}");
        }
        // A stored hash whose output was altered never verifies.
        let mut bad = h.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!verify_blocking("correct horse battery", &bad));
    }

    #[tokio::test]
    async fn pool_threads_verify_repeatedly_with_kept_memory() {
        let p = Passwords::new(1).unwrap();
        let h = hash_blocking("correct horse battery").unwrap();
        for _ in 0..3 {
            let ok = p
                .verify(
                    Zeroizing::new("correct horse battery".into()),
                    Some(h.clone()),
                )
                .await
                .unwrap();
            assert!(ok);
            let wrong = p
                .verify(
                    Zeroizing::new("wrong horse battery".into()),
                    Some(h.clone()),
                )
                .await
                .unwrap();
            assert!(!wrong);
        }
        // Unknown user: the dummy costs the same and is always false.
        assert!(!p
            .verify(Zeroizing::new("anything".into()), None)
            .await
            .unwrap());
    }

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
