//! Access to a tenant's data-encryption key (DEK) for envelope encryption: read the wrapped key
//! from the catalog and unwrap it under the master key (blocking; call from a blocking thread).

use crate::crypto::keyring::{self, KeyPurpose};
use crate::crypto::Key256;
use crate::domain::TenantId;
use crate::store::{catalog, StoreError, StoreResult};

use super::AppState;

/// The active DEK of a tenant and its version.
pub fn active_dek(state: &AppState, t: &TenantId) -> StoreResult<(u32, Key256)> {
    let (v, w) = {
        let c = state.catalog.db().lock();
        catalog::active_key(&c, t.as_str(), KeyPurpose::Dek)?
    };
    let k = keyring::unwrap(&state.master, t.as_str(), v, KeyPurpose::Dek, &w)
        .map_err(|e| StoreError::Key(e.to_string()))?;
    Ok((v, k))
}

/// The DEK of a given version (active or retired but not yet purged).
pub fn dek_version(state: &AppState, t: &TenantId, version: u32) -> StoreResult<Key256> {
    let w = {
        let c = state.catalog.db().lock();
        catalog::key_version(&c, t.as_str(), KeyPurpose::Dek, version)?
    };
    keyring::unwrap(&state.master, t.as_str(), version, KeyPurpose::Dek, &w)
        .map_err(|e| StoreError::Key(e.to_string()))
}
