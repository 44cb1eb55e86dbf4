//! Sealing in one place (DESIGN.md "Keys and encryption"): every envelope-encrypted value of a
//! tenant — the sealed columns of the tenant store and the screenshot files — is sealed, opened
//! and re-sealed through this module, which owns
//!
//! - **the registry** of sealed columns with the AAD recipe of each ([`Sealed`],
//!   [`SEALED_COLUMNS`]; the screenshot files' recipe is [`screenshot_aad`]);
//! - **key lookup**: the DEK new ciphertexts are sealed with ([`active_dek`]: the pending version
//!   while a rotation runs, else the active one) and the DEK of a recorded version
//!   ([`dek_version`]);
//! - **seal and open** (sealing only inside [`write_sealed`], so never outside the fence;
//!   [`open`], [`open_screenshot`]), and the rotation's re-seal
//!   ([`Resealer`]);
//! - **the fenced write** ([`write_sealed`], [`write_sealed_blocking`]): seal under the current
//!   DEK, run the store write — which checks the rotation fence
//!   (`store::fence::check_dek_fence` / `check_sealed_fence`) inside its own transaction — and
//!   when a rotation raised the fence meanwhile (`Conflict::KeyRotated`), seal again under the
//!   new DEK and retry, at most [`MAX_ATTEMPTS`] times (then `StoreError::Busy`).
//!
//! So a write racing a rotation either commits before the fence is raised (and the rotation's
//! rewrap re-seals it) or is sealed under the new DEK: no acknowledged value is left under a key
//! the rotation retires.
//!
//! # AAD recipes
//!
//! AAD = [`envelope::aad`] of (tenant id, table, row id, column) — length-prefixed parts after
//! the `flowguard/envelope/v1` label. The byte strings are part of the stored data: changing a
//! recipe makes existing ciphertexts unreadable.
//!
//! | value                          | parts                                              |
//! |--------------------------------|----------------------------------------------------|
//! | secret variable                | tenant, `variables`, application id, variable name |
//! | LDAP bind password             | tenant, `ldap_config`, `1`, `bind_password`        |
//! | LDAP client key                | tenant, `ldap_config`, `1`, `client_key`           |
//! | AI endpoint API key            | tenant, `ai_endpoint`, `1`, `api_key`              |
//! | OIDC client secret             | tenant, `oidc_config`, `1`, `client_secret`        |
//! | ticket integration token       | tenant, `integrations`, application id, `token`    |
//! | screenshot file (not a column) | tenant, `screenshots`, object id                   |
//!
//! (A secret variable's row is named by its key, application id and name; the column is implied.
//! The single-row tables name their row `1`.)
//!
//! # Adding a sealed column
//!
//! Add a [`Sealed`] constant with its recipe to [`SEALED_COLUMNS`] (or a rotation refuses to
//! retire the old DEK: its last step scans every column for older ciphertexts), write it only
//! through [`write_sealed`], and make the store write call `fence::check_sealed_fence` for the
//! ciphertext inside its transaction.
//!
//! Everything here that reads the catalog or unwraps keys is blocking (call it from a blocking
//! thread) except [`write_sealed`], which goes off the executor itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::AppState;
use crate::crypto::keyring::{self, KeyPurpose};
use crate::crypto::{envelope, Key256};
use crate::domain::TenantId;
use crate::fault;
use crate::store::fence::SealedColumn;
use crate::store::{catalog, ldap, oidc, Conflict, StoreError, StoreResult};

// ---------------------------------------------------------------- registry

/// A sealed (envelope-encrypted) column of the tenant store and how its AAD is built.
#[derive(Debug, Clone, Copy)]
pub struct Sealed {
    /// Where the ciphertexts live; the rotation re-seals them there
    /// (`store::fence::reseal_batch`).
    pub column: SealedColumn,
    /// The AAD recipe: from the tenant and the row's key (see [`Sealed::aad`]).
    pub recipe: fn(&TenantId, &[&str]) -> Vec<u8>,
}

impl Sealed {
    /// AAD of this column's value in the row `row_key`: the values of
    /// [`SealedColumn::key_columns`] in order for a keyed table ([`VARIABLE`]: application id,
    /// name); ignored by the single-row tables, whose row id is the constant `1`.
    pub fn aad(&self, t: &TenantId, row_key: &[&str]) -> Vec<u8> {
        (self.recipe)(t, row_key)
    }

    /// `table.column`, for messages.
    pub fn name(&self) -> String {
        format!("{}.{}", self.column.table, self.column.column)
    }
}

fn variable_aad(t: &TenantId, key: &[&str]) -> Vec<u8> {
    let part = |i: usize| key.get(i).copied().unwrap_or("");
    envelope::aad(&[t.as_str(), "variables", part(0), part(1)])
}

fn ldap_bind_password_aad(t: &TenantId, _key: &[&str]) -> Vec<u8> {
    envelope::aad(&[
        t.as_str(),
        ldap::CONFIG_TABLE,
        ldap::CONFIG_ROW,
        "bind_password",
    ])
}

fn ldap_client_key_aad(t: &TenantId, _key: &[&str]) -> Vec<u8> {
    envelope::aad(&[
        t.as_str(),
        ldap::CONFIG_TABLE,
        ldap::CONFIG_ROW,
        "client_key",
    ])
}

fn oidc_client_secret_aad(t: &TenantId, _key: &[&str]) -> Vec<u8> {
    envelope::aad(&[
        t.as_str(),
        oidc::CONFIG_TABLE,
        oidc::CONFIG_ROW,
        "client_secret",
    ])
}

fn ai_api_key_aad(t: &TenantId, _key: &[&str]) -> Vec<u8> {
    envelope::aad(&[t.as_str(), "ai_endpoint", "1", "api_key"])
}

fn integration_token_aad(t: &TenantId, key: &[&str]) -> Vec<u8> {
    let app = key.first().copied().unwrap_or("");
    envelope::aad(&[t.as_str(), "integrations", app, "token"])
}

/// Secret variable values: `variables.ciphertext`, keyed by (application id, name).
/// AAD = tenant, `variables`, application id, name.
pub const VARIABLE: Sealed = Sealed {
    column: SealedColumn {
        table: "variables",
        column: "ciphertext",
        key_columns: &["application_id", "name"],
    },
    recipe: variable_aad,
};

/// The LDAP service account's bind password: `ldap_config.bind_password` (single row).
/// AAD = tenant, `ldap_config`, `1`, `bind_password`. (The key column listed is only there for
/// the rewrap's query; the recipe does not use it.)
pub const LDAP_BIND_PASSWORD: Sealed = Sealed {
    column: SealedColumn {
        table: "ldap_config",
        column: "bind_password",
        key_columns: &["updated_by"],
    },
    recipe: ldap_bind_password_aad,
};

/// The LDAP TLS client key (PEM): `ldap_config.client_key` (single row, optional).
/// AAD = tenant, `ldap_config`, `1`, `client_key`.
pub const LDAP_CLIENT_KEY: Sealed = Sealed {
    column: SealedColumn {
        table: "ldap_config",
        column: "client_key",
        key_columns: &["updated_by"],
    },
    recipe: ldap_client_key_aad,
};

/// The tenant's AI endpoint API key: `ai_endpoint.api_key` (single row, optional).
/// AAD = tenant, `ai_endpoint`, `1`, `api_key`.
pub const AI_API_KEY: Sealed = Sealed {
    column: SealedColumn {
        table: "ai_endpoint",
        column: "api_key",
        key_columns: &["updated_by"],
    },
    recipe: ai_api_key_aad,
};

/// The OpenID Connect client secret: `oidc_config.client_secret` (single row).
/// AAD = tenant, `oidc_config`, `1`, `client_secret`.
pub const OIDC_CLIENT_SECRET: Sealed = Sealed {
    column: SealedColumn {
        table: "oidc_config",
        column: "client_secret",
        key_columns: &["updated_by"],
    },
    recipe: oidc_client_secret_aad,
};

/// A ticket integration's tracker token (issue 20): `integrations.token`, keyed by application
/// id. AAD = tenant, `integrations`, application id, `token`.
pub const INTEGRATION_TOKEN: Sealed = Sealed {
    column: SealedColumn {
        table: "integrations",
        column: "token",
        key_columns: &["application_id"],
    },
    recipe: integration_token_aad,
};

/// Every sealed column of the tenant store; a key rotation re-seals exactly these.
pub const SEALED_COLUMNS: &[Sealed] = &[
    VARIABLE,
    LDAP_BIND_PASSWORD,
    LDAP_CLIENT_KEY,
    AI_API_KEY,
    OIDC_CLIENT_SECRET,
    INTEGRATION_TOKEN,
];

/// AAD of a screenshot file (`<data>/screenshots/<tenant>/<object>.fgs`, sealed with the DEK;
/// its key version is also recorded in `screenshots.key_version`): tenant, `screenshots`,
/// object id.
pub fn screenshot_aad(t: &TenantId, object: &str) -> Vec<u8> {
    envelope::aad(&[t.as_str(), "screenshots", object])
}

// ---------------------------------------------------------------- keys

fn key_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Key(e.to_string())
}

/// The DEK new ciphertexts are sealed with, and its version: the pending version while a
/// rotation runs, else the active one (blocking). `NotFound` for a tenant without keys; `Key`
/// when the wrapped key does not unwrap.
pub fn active_dek(state: &AppState, t: &TenantId) -> StoreResult<(u32, Key256)> {
    let (v, w) = state.catalog.blocking(|c| catalog::sealing_dek(c, t))?;
    let k = keyring::unwrap(&state.master, t, v, KeyPurpose::Dek, &w).map_err(key_err)?;
    Ok((v, k))
}

/// The DEK of `version` while it is pending or active (blocking). A retired DEK is destroyed:
/// `NotFound` (the value was re-sealed meanwhile; read it again); `Key` when it does not unwrap.
pub fn dek_version(state: &AppState, t: &TenantId, version: u32) -> StoreResult<Key256> {
    let w = state
        .catalog
        .blocking(|c| catalog::key_version(c, t, KeyPurpose::Dek, version))?;
    keyring::unwrap(&state.master, t, version, KeyPurpose::Dek, &w).map_err(key_err)
}

fn usable_deks(state: &AppState, t: &TenantId) -> StoreResult<HashMap<u32, Key256>> {
    let rows = state
        .catalog
        .blocking(|c| catalog::usable_keys(c, t, KeyPurpose::Dek))?;
    rows.into_iter()
        .map(|(v, w)| {
            keyring::unwrap(&state.master, t, v, KeyPurpose::Dek, &w)
                .map(|k| (v, k))
                .map_err(key_err)
        })
        .collect()
}

// ---------------------------------------------------------------- seal and open

fn open_with_aad(
    state: &AppState,
    t: &TenantId,
    aad: &[u8],
    ciphertext: &[u8],
) -> StoreResult<Zeroizing<Vec<u8>>> {
    let v = envelope::key_version(ciphertext).map_err(key_err)?;
    let dek = dek_version(state, t, v)?;
    envelope::open(&dek, aad, ciphertext).map_err(key_err)
}

/// Open a ciphertext of column `col` in row `row_key` with the DEK version it records
/// (blocking). `NotFound` when that DEK is retired (a rotation re-sealed the value after it was
/// read: read it again, see [`reread`]); `Key` when it is not an envelope or does not decrypt
/// (wrong row, altered data).
pub fn open(
    state: &AppState,
    t: &TenantId,
    col: &Sealed,
    row_key: &[&str],
    ciphertext: &[u8],
) -> StoreResult<Zeroizing<Vec<u8>>> {
    open_with_aad(state, t, &col.aad(t, row_key), ciphertext)
}

/// Open the sealed file of screenshot `object` (its bytes `data`), like [`open`].
pub fn open_screenshot(
    state: &AppState,
    t: &TenantId,
    object: &str,
    data: &[u8],
) -> StoreResult<Zeroizing<Vec<u8>>> {
    open_with_aad(state, t, &screenshot_aad(t, object), data)
}

/// Run `read` — read a row and [`open`] its sealed values — again (at most 3 runs) when it
/// fails with `NotFound` or `Key`: a rotation may re-seal the row and retire the DEK it was read
/// under between the read and the key lookup. Blocking if `read` is.
pub fn reread<R>(mut read: impl FnMut() -> StoreResult<R>) -> StoreResult<R> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match read() {
            Err(StoreError::NotFound | StoreError::Key(_)) if attempt < 3 => continue,
            other => return other,
        }
    }
}

// ---------------------------------------------------------------- fenced writes

/// How many times a write is sealed and tried before giving up with `StoreError::Busy` (each
/// `Conflict::KeyRotated` means a rotation raised the fence since the value was sealed).
pub const MAX_ATTEMPTS: u32 = 5;

/// A plaintext bound for a sealed column or a screenshot file, with its AAD (built here from
/// the registry's recipe; the value is zeroed on drop).
pub struct Plain {
    aad: Vec<u8>,
    value: Zeroizing<Vec<u8>>,
}

impl Plain {
    /// `value` for column `col` of row `row_key` (see [`Sealed::aad`]).
    pub fn column(t: &TenantId, col: &Sealed, row_key: &[&str], value: &[u8]) -> Self {
        Self {
            aad: col.aad(t, row_key),
            value: Zeroizing::new(value.to_vec()),
        }
    }

    /// The (masked) PNG of screenshot `object`, for its file.
    pub fn screenshot(t: &TenantId, object: &str, png: Vec<u8>) -> Self {
        Self {
            aad: screenshot_aad(t, object),
            value: Zeroizing::new(png),
        }
    }
}

/// Seal every value under one DEK version; (0, nothing) for no values (no key is looked up).
fn seal_all(state: &AppState, t: &TenantId, values: &[Plain]) -> StoreResult<(u32, Vec<Vec<u8>>)> {
    if values.is_empty() {
        return Ok((0, Vec::new()));
    }
    let (v, dek) = active_dek(state, t)?;
    let cts = values
        .iter()
        .map(|p| envelope::seal(&dek, v, &p.aad, &p.value).map_err(key_err))
        .collect::<StoreResult<Vec<_>>>()?;
    // Debug builds: `FLOWGUARD_FAULT_PAUSE=sealing:before_write=<ms>` widens the window between
    // sealing and the fenced write, so the rotation race tests hit it.
    fault::pause("sealing:before_write");
    Ok((v, cts))
}

/// The fenced write of sealed values (blocking): seal `values` under the current DEK (all under
/// the same version), then `write(version, ciphertexts)` — ciphertexts in the order of
/// `values`, version 0 when `values` is empty — which must store them in one transaction that
/// checks the rotation fence for each (`fence::check_sealed_fence`) and so returns
/// `Conflict::KeyRotated` when a rotation raised it since. Then the values are sealed again
/// under the new DEK and `write` runs again, at most [`MAX_ATTEMPTS`] times in all
/// (then `StoreError::Busy`). Any other result of `write` is returned as is.
pub fn write_sealed_blocking<R>(
    state: &AppState,
    t: &TenantId,
    values: &[Plain],
    mut write: impl FnMut(u32, Vec<Vec<u8>>) -> StoreResult<R>,
) -> StoreResult<R> {
    for attempt in 1..=MAX_ATTEMPTS {
        let (v, cts) = seal_all(state, t, values)?;
        match write(v, cts) {
            Err(StoreError::Conflict(Conflict::KeyRotated)) => {
                tracing::debug!(tenant = %t, version = v, attempt, "key rotated while writing; sealing again");
            }
            other => return other,
        }
    }
    Err(StoreError::Busy)
}

/// [`write_sealed_blocking`] for async callers: sealing runs off the executor, and `write`
/// returns the future of the store write (typically `state.tenants.run(...)` of a store
/// function that checks the fence).
pub async fn write_sealed<R, F, Fut>(
    state: &Arc<AppState>,
    t: &TenantId,
    values: Vec<Plain>,
    mut write: F,
) -> StoreResult<R>
where
    F: FnMut(u32, Vec<Vec<u8>>) -> Fut,
    Fut: Future<Output = StoreResult<R>>,
{
    let values = Arc::new(values);
    for attempt in 1..=MAX_ATTEMPTS {
        let (v, cts) = if values.is_empty() {
            (0, Vec::new())
        } else {
            let (st, t2, vals) = (state.clone(), t.clone(), values.clone());
            tokio::task::spawn_blocking(move || seal_all(&st, &t2, &vals))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))??
        };
        match write(v, cts).await {
            Err(StoreError::Conflict(Conflict::KeyRotated)) => {
                tracing::debug!(tenant = %t, version = v, attempt, "key rotated while writing; sealing again");
            }
            other => return other,
        }
    }
    Err(StoreError::Busy)
}

// ---------------------------------------------------------------- rotation

/// The rotation's re-seal (rewrap step) to DEK version `to`: opens a ciphertext with whichever
/// usable (pending or active) DEK it records and seals it again under `to` with the same AAD.
pub struct Resealer {
    t: TenantId,
    to: u32,
    deks: HashMap<u32, Key256>,
}

impl Resealer {
    /// Load the tenant's usable DEKs (blocking). `Key` when DEK `to` is not among them.
    pub fn new(state: &AppState, t: &TenantId, to: u32) -> StoreResult<Self> {
        let deks = usable_deks(state, t)?;
        if !deks.contains_key(&to) {
            return Err(StoreError::Key(format!("DEK version {to} is not usable")));
        }
        Ok(Self {
            t: t.clone(),
            to,
            deks,
        })
    }

    fn reseal(&self, what: &str, aad: &[u8], ct: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let v = envelope::key_version(ct)
            .map_err(|_| StoreError::Key(format!("{what} is not an envelope")))?;
        if v >= self.to {
            return Ok(None);
        }
        let old = self.deks.get(&v).ok_or_else(|| {
            StoreError::Key(format!(
                "{what} is under DEK version {v}, which is not usable"
            ))
        })?;
        let new = self
            .deks
            .get(&self.to)
            .ok_or_else(|| StoreError::Key(format!("DEK version {} is not usable", self.to)))?;
        let pt = envelope::open(old, aad, ct)
            .map_err(|_| StoreError::Key(format!("{what} does not decrypt")))?;
        envelope::seal(new, self.to, aad, &pt)
            .map(Some)
            .map_err(key_err)
    }

    /// `ct` of column `col` in the row with key column values `row_key`, re-sealed under the
    /// new DEK; `None` when it already is at or above it. `Key` when it is not an envelope,
    /// records a DEK that is not usable, or does not decrypt.
    pub fn column(
        &self,
        col: &Sealed,
        row_key: &[String],
        ct: &[u8],
    ) -> StoreResult<Option<Vec<u8>>> {
        let key: Vec<&str> = row_key.iter().map(String::as_str).collect();
        self.reseal(
            &format!("a ciphertext in {}", col.name()),
            &col.aad(&self.t, &key),
            ct,
        )
    }

    /// The file bytes of screenshot `object` re-sealed under the new DEK, like
    /// [`Resealer::column`].
    pub fn screenshot(&self, object: &str, data: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.reseal(
            &format!("screenshot {object}"),
            &screenshot_aad(&self.t, object),
            data,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AAD byte strings, built by hand: stored ciphertexts depend on them.
    fn expected(parts: &[&str]) -> Vec<u8> {
        let mut out = b"flowguard/envelope/v1".to_vec();
        for p in parts {
            out.extend_from_slice(&u32::try_from(p.len()).unwrap().to_be_bytes());
            out.extend_from_slice(p.as_bytes());
        }
        out
    }

    #[test]
    fn aad_recipes_are_stable() {
        let t = TenantId::parse("eus-abc123").unwrap();
        let tid = t.as_str();
        assert_eq!(
            VARIABLE.aad(&t, &["app1", "password"]),
            expected(&[tid, "variables", "app1", "password"])
        );
        assert_eq!(
            LDAP_BIND_PASSWORD.aad(&t, &["someone@x"]),
            expected(&[tid, "ldap_config", "1", "bind_password"])
        );
        assert_eq!(
            LDAP_CLIENT_KEY.aad(&t, &[]),
            expected(&[tid, "ldap_config", "1", "client_key"])
        );
        assert_eq!(
            AI_API_KEY.aad(&t, &[]),
            expected(&[tid, "ai_endpoint", "1", "api_key"])
        );
        assert_eq!(
            OIDC_CLIENT_SECRET.aad(&t, &[]),
            expected(&[tid, "oidc_config", "1", "client_secret"])
        );
        assert_eq!(
            INTEGRATION_TOKEN.aad(&t, &["app1"]),
            expected(&[tid, "integrations", "app1", "token"])
        );
        assert_eq!(
            screenshot_aad(&t, "obj1"),
            expected(&[tid, "screenshots", "obj1"])
        );
        let names: Vec<String> = SEALED_COLUMNS.iter().map(Sealed::name).collect();
        assert_eq!(
            names,
            [
                "variables.ciphertext",
                "ldap_config.bind_password",
                "ldap_config.client_key",
                "ai_endpoint.api_key",
                "oidc_config.client_secret",
                "integrations.token"
            ]
        );
    }
}
