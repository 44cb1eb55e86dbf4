//! Backups (issue 19): `backup create`, `backup verify`, `restore`.
//!
//! A backup is a directory `flowguard-backup-<UTC yyyymmddThhmmssZ>/` laid out like a data dir:
//!
//! ```text
//! catalog.db                      SQLCipher, keyed like the live catalog (derived from the KEK)
//! tenants/<tenant>.db             SQLCipher, each under the tenant database key version the
//!                                 manifest names (wrapped under the KEK inside catalog.db)
//! screenshots/<tenant>/<obj>.fgs  the encrypted screenshot files the tenant copy references
//! keys/audit-signing.key          the deployment's audit-signing key, wrapped under the KEK
//! license.jwt                     the license file, when one is installed
//! manifest.json                   [`Manifest`]: versions, key ids, cipher settings, row counts,
//!                                 SHA-256 and size of every file above
//! manifest.sig                    hex Ed25519 signature of manifest.json's bytes by the
//!                                 audit-signing key
//! ```
//!
//! The master key (KEK) is **never** written into a backup: without the KEK none of the files
//! opens, so the operator escrows the KEK separately (README "Backup and restore"). The manifest
//! records only its id ([`MasterKey::kek_id`]).
//!
//! Consistency: each store is one snapshot taken inside one read transaction on its own
//! connection while writers continue (`store::backup::export`). Tenant stores are copied first
//! and the catalog last, so the catalog copy holds every key version the tenant copies are under;
//! tenants the catalog copy names but the pass had not seen (created meanwhile) are copied
//! after it. Screenshot files are copied for the rows of the tenant **copy** (a file is written
//! and synced before its row commits, so every such file exists). The directory is written as
//! `.flowguard-backup-<ts>.partial` and renamed only after every file is synced and every copy
//! has passed the integrity checks (`Copies::Fresh`), so an interrupted backup (kill -9, a full
//! disk) never looks complete.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::audit::{verify_chain, ChainState};
use crate::crypto::audit_signing::{self, AuditSigner};
use crate::crypto::keyring::{self, KeyPurpose};
use crate::crypto::{Key256, MasterKey};
use crate::domain::TenantId;
use crate::store::backup as snap;
use crate::store::backup::CipherSettings;
use crate::store::{catalog, Catalog, Conn, StoreError, TenantStores};

/// Version of the backup layout and manifest written by this binary.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of every complete backup directory.
pub const DIR_PREFIX: &str = "flowguard-backup-";
/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";
/// Signature file name.
pub const SIGNATURE: &str = "manifest.sig";
const CATALOG_FILE: &str = "catalog.db";
const SIGNING_KEY_FILE: &str = "keys/audit-signing.key";
const LICENSE_FILE: &str = "license.jwt";

/// The signed description of one backup (`manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// `flowguard --version` of the writer.
    pub binary_version: String,
    /// When the backup started (RFC 3339 UTC); every write acknowledged before it is inside.
    pub started_at: String,
    /// When the last store snapshot was taken (RFC 3339 UTC).
    pub finished_at: String,
    /// Id of the master key (KEK) the backup's keys are wrapped under (a hash, never the key).
    pub master_key_id: String,
    /// Id of the audit-signing key that signed this manifest.
    pub signing_key_id: String,
    /// `None`: every tenant; else the tenants asked for (`--tenant`).
    pub tenants_selected: Option<Vec<String>>,
    /// SQLCipher settings the stores were written with.
    pub cipher: CipherSettings,
    /// One entry per store copy.
    pub stores: Vec<StoreEntry>,
    /// Every file of the backup except the manifest and its signature.
    pub files: Vec<FileEntry>,
}

/// One store in a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreEntry {
    /// `catalog` or the tenant id.
    pub name: String,
    /// Path relative to the backup directory.
    pub file: String,
    /// Schema version (`user_version`) of the store.
    pub schema_version: i64,
    /// Tenant database key version the copy is encrypted under (`None` for the catalog, whose
    /// key derives from the KEK).
    pub key_version: Option<u32>,
    /// Rows per table in the snapshot.
    pub tables: BTreeMap<String, i64>,
}

/// One file in a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the backup directory (`/`-separated).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// What `backup create` made (the `--json` summary).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The complete backup directory.
    pub dir: PathBuf,
    /// Lowercase hex SHA-256 of `manifest.json` (recorded in the catalog audit row).
    pub manifest_sha256: String,
    /// Master key id the backup needs.
    pub master_key_id: String,
    /// Total bytes of the files.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Stores copied (catalog included).
    pub stores: usize,
    /// Tenant stores copied.
    pub tenants: usize,
    /// Screenshot files copied.
    pub screenshots: usize,
    /// Rows per store and table.
    pub rows: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Progress of a backup: `done` of `total` steps (a step is one store with its files).
#[derive(Debug, Clone)]
pub struct Progress {
    /// Steps finished.
    pub done: u64,
    /// Steps known so far.
    pub total: u64,
    /// What is being copied (`catalog` or a tenant id).
    pub what: String,
}

/// Where a backup comes from.
pub struct Source<'a> {
    /// The live data dir.
    pub data_dir: &'a Path,
    /// Its master key.
    pub master: &'a MasterKey,
    /// Its audit signer.
    pub signer: &'a AuditSigner,
    /// Its license file (copied when present).
    pub license_file: PathBuf,
    /// SQLite busy timeout for the snapshot connections, ms.
    pub busy_ms: u64,
    /// The id of this backup's own `backups` row in the live catalog (API, scheduled and CLI
    /// backups), recorded `done` inside the catalog copy ([`snap::mark_own_backup_done`]).
    pub own_row: Option<&'a str>,
}

fn utc_stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// SHA-256 (hex) and size of a file, streamed.
pub fn hash_file(p: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

fn copy_synced(from: &Path, to: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = to.parent() {
        crate::store::private_dir(d)?;
    }
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let n = std::io::copy(&mut src, &mut dst)?;
    dst.sync_all()?;
    Ok(n)
}

fn sync_dir(p: &Path) {
    if let Ok(d) = std::fs::File::open(p) {
        let _ = d.sync_all();
    }
}

/// The unwrapped database keys of a tenant that `catalog` (a live or copied catalog
/// connection) lists as usable, newest-active first.
fn tenant_db_keys(
    c: &Conn,
    master: &MasterKey,
    t: &TenantId,
) -> anyhow::Result<Vec<(u32, Key256)>> {
    let mut out = Vec::new();
    for (v, w) in catalog::usable_keys(c, t, KeyPurpose::Db)? {
        let k = keyring::unwrap(master, t, v, KeyPurpose::Db, &w)
            .map_err(|e| anyhow!("tenant {t}: database key v{v} does not unwrap: {e}"))?;
        out.push((v, k));
    }
    Ok(out)
}

struct Pass<'a> {
    src: &'a Source<'a>,
    tmp: PathBuf,
    stores: Vec<StoreEntry>,
    cipher: Option<CipherSettings>,
    screenshots: usize,
}

impl Pass<'_> {
    /// Snapshot one tenant store (with the live catalog's keys) and copy its screenshot files.
    fn tenant(&mut self, live_catalog: &Conn, t: &TenantId) -> anyhow::Result<()> {
        let path = TenantStores::dir_in(self.src.data_dir).join(format!("{}.db", t.as_str()));
        if !path.is_file() {
            bail!("tenant {t}: store file {} is missing", path.display());
        }
        let keys = tenant_db_keys(live_catalog, self.src.master, t)?;
        let mut opened = None;
        for (v, k) in keys {
            match snap::open_source(&path, &k, self.src.busy_ms) {
                Ok(c) => {
                    opened = Some((v, k, c));
                    break;
                }
                Err(StoreError::WrongKey(_)) => continue,
                Err(e) => return Err(anyhow!("tenant {t}: cannot open its store: {e}")),
            }
        }
        let (version, key, conn) =
            opened.ok_or_else(|| anyhow!("tenant {t}: no key in the catalog opens its store"))?;
        let rel = format!("tenants/{}.db", t.as_str());
        let dest = self.tmp.join(&rel);
        crate::store::private_dir(&self.tmp.join("tenants"))?;
        let s = snap::export(&conn, &dest, &key)
            .map_err(|e| anyhow!("tenant {t}: snapshot failed: {e}"))?;
        drop(conn);
        self.cipher.get_or_insert(s.cipher.clone());
        // Screenshot files of the rows in the copy.
        let _span = tracing::debug_span!("backup.screenshots").entered();
        let copy = snap::open_copy(&dest, &key)?;
        let ids = snap::screenshot_ids(&copy)?;
        drop(copy);
        let shots = self.src.data_dir.join("screenshots").join(t.as_str());
        for id in ids {
            let name = format!("{id}.fgs");
            let from = shots.join(&name);
            let to = self.tmp.join("screenshots").join(t.as_str()).join(&name);
            match copy_synced(&from, &to) {
                Ok(_) => self.screenshots += 1,
                // Purged (retention) after the snapshot: the row is gone from the live store too.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(tenant = %t, object = %id, "screenshot file vanished during the backup (purged meanwhile); not copied");
                }
                Err(e) => return Err(anyhow!("copying {}: {e}", from.display())),
            }
        }
        self.stores.push(StoreEntry {
            name: t.to_string(),
            file: rel,
            schema_version: s.schema_version,
            key_version: Some(version),
            tables: s.tables,
        });
        Ok(())
    }
}

/// Write a backup of `src` into a new directory under `to` (see the module doc). `tenants`:
/// only these tenants' stores (the catalog is always copied). Blocking.
///
/// Errors: the first problem, naming the store or file; the partial directory is removed.
pub fn create_blocking(
    src: &Source<'_>,
    to: &Path,
    tenants: Option<&[TenantId]>,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<(Summary, Manifest)> {
    let started = Instant::now();
    let now = chrono::Utc::now();
    let to_created = !to.exists();
    crate::store::private_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
    if to_created {
        owned_like_data_dir(src.data_dir, to)?;
    }
    let (final_dir, tmp) = reserve_dir(to, &utc_stamp(now))?;
    let res = create_into(src, &tmp, &final_dir, tenants, (now, started), progress);
    let manifest = match res {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let _span = tracing::debug_span!("backup.rename").entered();
    std::fs::rename(&tmp, &final_dir)?;
    sync_dir(to);
    owned_like_data_dir(src.data_dir, &final_dir)?;
    let (manifest_sha256, _) = hash_file(&final_dir.join(MANIFEST))?;
    let summary = Summary {
        dir: final_dir,
        manifest_sha256,
        master_key_id: manifest.master_key_id.clone(),
        bytes: manifest.files.iter().map(|f| f.bytes).sum(),
        duration_ms: started.elapsed().as_millis() as u64,
        stores: manifest.stores.len(),
        tenants: manifest.stores.len().saturating_sub(1),
        screenshots: manifest
            .files
            .iter()
            .filter(|f| f.path.starts_with("screenshots/"))
            .count(),
        rows: manifest
            .stores
            .iter()
            .map(|s| (s.name.clone(), s.tables.clone()))
            .collect(),
    };
    Ok((summary, manifest))
}

/// Reserve a backup directory name under `to` for the stamp `stamp`: the first of
/// `flowguard-backup-<stamp>`, `…-2`, `…-3`, … whose partial directory `.<name>.partial` this
/// call creates itself (`mkdir` fails when it exists, so two backups started in the same second —
/// CLI and API, two CLIs — never share one, review 3 F5) and whose final name does not exist.
/// The final name is checked *after* the partial directory is created: a backup renames its
/// partial directory to the final name atomically, so once ours exists no other backup can
/// complete under that name. A partial directory found is never removed (it may be another
/// backup's work in progress). Returns (final directory, partial directory).
///
/// Errors: `to` not writable, or 1000 names taken.
fn reserve_dir(to: &Path, stamp: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    for n in 1..=1000u32 {
        let name = if n == 1 {
            format!("{DIR_PREFIX}{stamp}")
        } else {
            format!("{DIR_PREFIX}{stamp}-{n}")
        };
        let tmp = to.join(format!(".{name}.partial"));
        match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", tmp.display())),
        }
        let final_dir = to.join(&name);
        if final_dir.symlink_metadata().is_ok() {
            let _ = std::fs::remove_dir(&tmp);
            continue;
        }
        return Ok((final_dir, tmp));
    }
    bail!(
        "no free backup directory name for {stamp} under {}",
        to.display()
    )
}

/// Give `path` (recursively) the owner of `data_dir` when it lies inside the data dir and the
/// owners differ: a `backup create` run as root on an install whose server runs as an
/// unprivileged user (`User=flowguard`) must not leave root-owned directories there that the
/// server's own backups and `backup.keep` then cannot write or delete (review 3, F18). Outside
/// the data dir nothing is changed.
///
/// Errors: naming the path that could not be changed.
fn owned_like_data_dir(data_dir: &Path, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Ok(p)) = (data_dir.canonicalize(), path.canonicalize()) else {
        return Ok(());
    };
    if !p.starts_with(&d) {
        return Ok(());
    }
    let owner = std::fs::metadata(&d)?;
    let mut todo = vec![p];
    while let Some(q) = todo.pop() {
        let m = std::fs::symlink_metadata(&q)?;
        if m.uid() != owner.uid() || m.gid() != owner.gid() {
            std::os::unix::fs::lchown(&q, Some(owner.uid()), Some(owner.gid())).with_context(
                || {
                    format!(
                        "cannot give {} the owner of the data dir {} (uid {}): run the command as that user",
                        q.display(),
                        d.display(),
                        owner.uid()
                    )
                },
            )?;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&q)? {
                todo.push(e?.path());
            }
        }
    }
    Ok(())
}

fn create_into(
    src: &Source<'_>,
    tmp: &Path,
    final_dir: &Path,
    tenants: Option<&[TenantId]>,
    (now, started): (chrono::DateTime<chrono::Utc>, Instant),
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Manifest> {
    let cat_key = src.master.catalog_db_key();
    let live = snap::open_source(&Catalog::path_in(src.data_dir), &cat_key, src.busy_ms)
        .map_err(|e| anyhow!("catalog: {e}"))?;
    let wanted = |t: &TenantId| tenants.is_none_or(|ts| ts.contains(t));
    let listed: Vec<TenantId> = catalog::list_tenants(&live)?
        .into_iter()
        .map(|r| r.id)
        .filter(|t| wanted(t))
        .collect();
    if let Some(ts) = tenants {
        for t in ts {
            if !listed.contains(t) {
                bail!("--tenant: no tenant `{t}` in this deployment");
            }
        }
    }
    let mut pass = Pass {
        src,
        tmp: tmp.to_path_buf(),
        stores: Vec::new(),
        cipher: None,
        screenshots: 0,
    };
    let total = listed.len() as u64 + 1;
    for (i, t) in listed.iter().enumerate() {
        progress(Progress {
            done: i as u64,
            total,
            what: t.to_string(),
        });
        pass.tenant(&live, t)?;
    }
    progress(Progress {
        done: total - 1,
        total,
        what: "catalog".into(),
    });
    let cat_dest = tmp.join(CATALOG_FILE);
    let cs = snap::export(&live, &cat_dest, &cat_key).map_err(|e| anyhow!("catalog: {e}"))?;
    // The copy was read while this backup's own row said `running`: record it `done` there
    // (before any file is hashed, so the manifest covers the file as restored; row counts are
    // unchanged), else a deployment restored from it lists its source backup as interrupted.
    if let Some(id) = src.own_row {
        let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        snap::mark_own_backup_done(
            &cat_dest,
            &cat_key,
            id,
            &final_dir.display().to_string(),
            ms,
            &now_rfc3339(),
        )
        .map_err(|e| anyhow!("catalog: recording this backup in its copy: {e}"))?;
    }
    let cipher = pass.cipher.clone().unwrap_or_else(|| cs.cipher.clone());
    // Tenants the catalog copy names that the pass did not copy (created meanwhile).
    let recheck = tracing::debug_span!("backup.catalog_recheck").entered();
    let cat_copy = snap::open_copy(&cat_dest, &cat_key)?;
    for r in catalog::list_tenants(&cat_copy)? {
        if wanted(&r.id) && !pass.stores.iter().any(|s| s.name == r.id.as_str()) {
            pass.tenant(&live, &r.id)?;
        }
    }
    drop(live);
    // Every tenant copy must open with a key the catalog copy holds (a rotation that retired
    // the key between the two snapshots would otherwise leave a copy nobody can open).
    for s in &pass.stores {
        let t = TenantId::parse(&s.name).map_err(|e| anyhow!("tenant id {}: {e}", s.name))?;
        let keys = tenant_db_keys(&cat_copy, src.master, &t)?;
        if !keys.iter().any(|(v, _)| Some(*v) == s.key_version) {
            bail!("tenant {t}: its key was rotated during the backup; run the backup again");
        }
    }
    drop(cat_copy);
    drop(recheck);
    pass.stores.insert(
        0,
        StoreEntry {
            name: "catalog".into(),
            file: CATALOG_FILE.into(),
            schema_version: cs.schema_version,
            key_version: None,
            tables: cs.tables,
        },
    );
    // Signing key (wrapped under the KEK) and license file.
    copy_synced(
        &AuditSigner::path_in(src.data_dir),
        &tmp.join(SIGNING_KEY_FILE),
    )
    .context("copying the audit-signing key")?;
    if src.license_file.is_file() {
        copy_synced(&src.license_file, &tmp.join(LICENSE_FILE)).context("copying the license")?;
    }
    // Prove every copy before the manifest is signed: the files are hashed on one lane while
    // the stores are checked on the other ([`check_all`]).
    let files = check_all(tmp, &pass.stores, src.master, Copies::Fresh, || {
        hash_tree(tmp)
    })?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        binary_version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339(now),
        finished_at: rfc3339(chrono::Utc::now()),
        master_key_id: src.master.kek_id(),
        signing_key_id: src.signer.key_id(),
        tenants_selected: tenants.map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        cipher,
        stores: pass.stores,
        files,
    };
    let _span = tracing::debug_span!("backup.manifest").entered();
    let bytes = serde_json::to_vec_pretty(&manifest)?;
    write_synced(&tmp.join(MANIFEST), &bytes)?;
    let sig = hex::encode(src.signer.sign(&bytes));
    write_synced(&tmp.join(SIGNATURE), sig.as_bytes())?;
    for d in walk_dirs(tmp)? {
        sync_dir(&d);
    }
    progress(Progress {
        done: total,
        total,
        what: "done".into(),
    });
    Ok(manifest)
}

fn write_synced(p: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

fn walk_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk_dirs(&p)?);
        }
    }
    Ok(out)
}

fn rel_path(root: &Path, p: &Path) -> anyhow::Result<String> {
    let rel = p
        .strip_prefix(root)
        .map_err(|_| anyhow!("{} is outside {}", p.display(), root.display()))?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(parts.join("/"))
}

/// A relative manifest path that cannot leave the backup directory.
fn safe_join(root: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        bail!("{MANIFEST}: file path `{rel}` is not a plain relative path");
    }
    Ok(root.join(rel))
}

/// Walk an audit chain in a (copied) store; the first problem, if any.
fn chain_problem(c: &Conn) -> anyhow::Result<Option<String>> {
    let max = crate::store::audit::max_seq(c)?;
    let anchor = crate::store::audit::anchor(c)?;
    let mut st = ChainState {
        last_hash: anchor.map(|a| a.1),
        ..Default::default()
    };
    let mut after = 0;
    loop {
        let page = crate::store::audit::page_asc(c, None, None, after, max, 2000)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            verify_chain(&mut st, r);
        }
    }
    Ok(st.first_bad.map(|b| {
        format!(
            "audit chain broken at seq {} (id {}): {}",
            b.seq, b.id, b.reason
        )
    }))
}

/// Open each store of `stores` under `root` read-only with its key (the catalog's derived from
/// `master`, a tenant's unwrapped from the catalog copy under `root`) and hand it to `f`, one
/// store at a time (a deployment with many tenants never holds them all open).
///
/// Errors: a store that is missing or does not open, naming its file; else the first error of
/// `f`.
fn each_store(
    root: &Path,
    stores: &[StoreEntry],
    master: &MasterKey,
    mut f: impl FnMut(&StoreEntry, &Conn) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let cat_key = master.catalog_db_key();
    let cat_path = safe_join(root, CATALOG_FILE)?;
    let cat = snap::open_copy(&cat_path, &cat_key).map_err(|e| match e {
        StoreError::WrongKey(_) => anyhow!(
            "{CATALOG_FILE}: does not open with master key {} (damaged, or another key)",
            master.kek_id()
        ),
        e => anyhow!("{CATALOG_FILE}: {e}"),
    })?;
    for s in stores {
        let path = safe_join(root, &s.file)?;
        let owned;
        let conn: &Conn = if s.key_version.is_none() {
            &cat
        } else {
            let t = TenantId::parse(&s.name).map_err(|e| anyhow!("{}: {e}", s.file))?;
            let v = s.key_version.unwrap_or_default();
            let keys = tenant_db_keys(&cat, master, &t)?;
            let (_, key) = keys
                .into_iter()
                .find(|(kv, _)| *kv == v)
                .ok_or_else(|| anyhow!("{}: the catalog holds no usable key v{v}", s.file))?;
            owned = snap::open_copy(&path, &key).map_err(|e| match e {
                StoreError::NotFound => anyhow!("{}: missing", s.file),
                StoreError::WrongKey(_) => {
                    anyhow!("{}: does not open with its key v{v} (damaged)", s.file)
                }
                e => anyhow!("{}: {e}", s.file),
            })?;
            &owned
        };
        f(s, conn)?;
    }
    Ok(())
}

/// Which checks a backup's stores get.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copies {
    /// Just written by `backup create` (`sqlcipher_export` into a new file): SQLCipher's
    /// `cipher_integrity_check` runs only on a copy with pages on its freelist. Without free
    /// pages, SQLite's `integrity_check` (which always runs) reads every page of the file — each
    /// b-tree, overflow and freelist-trunk page, and reports any page never used — and every page
    /// read is HMAC-checked and decrypted by SQLCipher, so it covers what
    /// `cipher_integrity_check` covers (issue-19 benchmark: it saves 0.7 s of 4.1 s on 200 MB).
    Fresh,
    /// A backup being verified or restored: both integrity checks, always.
    Full,
}

/// SQLCipher's check of every store of `stores` under `root`: `cipher_integrity_check` (the
/// HMAC of every page of the file); for [`Copies::Fresh`] only on a copy with free pages.
fn check_store_ciphers(
    root: &Path,
    stores: &[StoreEntry],
    master: &MasterKey,
    copies: Copies,
) -> anyhow::Result<()> {
    each_store(root, stores, master, |s, conn| {
        if copies == Copies::Fresh {
            let free: i64 = conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                .map_err(|e| anyhow!("{}: {e}", s.file))?;
            if free == 0 {
                return Ok(());
            }
        }
        let problems =
            snap::cipher_integrity_problems(conn).map_err(|e| anyhow!("{}: {e}", s.file))?;
        match problems.first() {
            Some(p) => bail!("{}: {p}", s.file),
            None => Ok(()),
        }
    })
}

/// SQLite's check of every store of `stores` under `root` (`integrity_check`), then its row
/// counts against the manifest's and its audit chain.
fn check_store_contents(
    root: &Path,
    stores: &[StoreEntry],
    master: &MasterKey,
) -> anyhow::Result<()> {
    each_store(root, stores, master, |s, conn| {
        let problems =
            snap::btree_integrity_problems(conn).map_err(|e| anyhow!("{}: {e}", s.file))?;
        if let Some(p) = problems.first() {
            bail!("{}: {p}", s.file);
        }
        let counting = tracing::debug_span!("check.row_counts").entered();
        let counts = snap::table_counts(conn).map_err(|e| anyhow!("{}: {e}", s.file))?;
        drop(counting);
        if counts != s.tables {
            bail!(
                "{}: row counts differ from the manifest (manifest {:?}, file {:?})",
                s.file,
                s.tables,
                counts
            );
        }
        let _span = tracing::debug_span!("check.audit_chain").entered();
        if let Some(p) = chain_problem(conn).map_err(|e| anyhow!("{}: {e}", s.file))? {
            bail!("{}: {p}", s.file);
        }
        Ok(())
    })
}

/// Run `a` on a second thread while `b` runs on this one, and return both results: the checks
/// of a backup are two independent lanes, so on a machine with two cores their wall time is the
/// longer lane's, not the sum (the issue-19 benchmark, `benches/backup_speed.rs`). The second
/// thread's spans are children of the current span. A panic in `a` is resumed here.
fn in_parallel<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    let parent = tracing::Span::current();
    std::thread::scope(|sc| {
        let h = sc.spawn(move || parent.in_scope(a));
        let rb = b();
        match h.join() {
            Ok(ra) => (ra, rb),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Every check of the stores of `stores` under `root`, beside `files` (the files' hashes: computed
/// by `backup create`, compared by `verify`): lane 1 runs `files`, then
/// [`check_store_ciphers`]; lane 2 [`check_store_contents`]. Both lanes always finish; the
/// error reported is the files' first, then the contents', then the ciphers' (so a changed file is
/// named by its hash, as before the lanes ran side by side).
fn check_all<T: Send>(
    root: &Path,
    stores: &[StoreEntry],
    master: &MasterKey,
    copies: Copies,
    files: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let ((files, ciphers), contents) = in_parallel(
        || {
            let files = files();
            let ciphers = match files {
                Ok(_) => check_store_ciphers(root, stores, master, copies),
                Err(_) => Ok(()),
            };
            (files, ciphers)
        },
        || check_store_contents(root, stores, master),
    );
    let t = files?;
    contents?;
    ciphers?;
    Ok(t)
}

/// Compare every file of `files` under `root` with its size and SHA-256.
fn check_file_hashes(root: &Path, files: &[FileEntry]) -> anyhow::Result<()> {
    let _span = tracing::debug_span!("verify.hash").entered();
    for f in files {
        let p = safe_join(root, &f.path)?;
        let (sha, n) =
            hash_file(&p).map_err(|e| anyhow!("{}: cannot read: {}", f.path, e.kind()))?;
        if n != f.bytes || sha != f.sha256 {
            bail!(
                "{}: content differs from the manifest (SHA-256 {sha}, expected {})",
                f.path,
                f.sha256
            );
        }
    }
    Ok(())
}

/// SHA-256 and size of every file under `dir` (the manifest's `files`, sorted by path).
fn hash_tree(dir: &Path) -> anyhow::Result<Vec<FileEntry>> {
    let _span = tracing::debug_span!("backup.hash").entered();
    let mut files = Vec::new();
    for p in walk(dir)? {
        let rel = rel_path(dir, &p)?;
        let (sha256, bytes) = hash_file(&p)?;
        files.push(FileEntry {
            path: rel,
            bytes,
            sha256,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `backup create` for a deployment: load its audit signer, write the backup, and append a
/// catalog audit row `backup.create` (directory, manifest SHA-256, bytes, duration) or
/// `backup.failed` (the error) in the **live** catalog. `own_row`: the backup's own `backups`
/// row id, recorded `done` in the catalog copy (see [`Source::own_row`]). Blocking.
///
/// Errors: as [`create_blocking`]; the audit row is written either way.
#[allow(clippy::too_many_arguments)]
pub fn create_recorded(
    settings: &crate::config::Settings,
    master: &MasterKey,
    live_catalog: &Catalog,
    own_row: Option<&str>,
    to: &Path,
    tenants: Option<&[TenantId]>,
    actor: &crate::audit::Actor,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Summary> {
    let signer = AuditSigner::load(&settings.data_dir, master)?;
    let src = Source {
        data_dir: &settings.data_dir,
        master,
        signer: &signer,
        license_file: settings.license_path(),
        busy_ms: settings.store.busy_timeout_ms,
        own_row,
    };
    let res = create_blocking(&src, to, tenants, progress);
    let ev = match &res {
        Ok((s, _)) => crate::audit::NewAuditEvent::new(
            actor,
            "backup.create",
            Some(format!(
                "backup:{}",
                s.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )),
        )
        .details(serde_json::json!({
            "dir": s.dir.display().to_string(),
            "manifest_sha256": s.manifest_sha256,
            "bytes": s.bytes,
            "duration_ms": s.duration_ms,
            "stores": s.stores,
        })),
        Err(e) => crate::audit::NewAuditEvent::new(actor, "backup.failed", None::<String>).details(
            serde_json::json!({ "to": to.display().to_string(), "error": format!("{e:#}") }),
        ),
    };
    if let Err(e) = crate::service::host::record_catalog_event(live_catalog, &ev) {
        tracing::error!(error = %e, "cannot write the backup audit row");
    }
    res.map(|(s, _)| s)
}

/// A backup started from the API or the scheduled job, as the catalog's `backups` table keeps
/// it (the list survives restarts; a row still `running` at start is marked `failed`).
pub use crate::store::backup::BackupRow;

/// Name of the scheduled backup job (`[backup] schedule`).
pub const BACKUP_JOB: &str = "backup";

fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// Directory under the data dir holding one lock file `<backup id>.lock` per running backup.
const LOCK_DIR: &str = "backup-locks";

/// Error of a `running` backup row whose process is gone.
pub const INTERRUPTED: &str =
    "interrupted: the process writing this backup ended (killed, crashed or restarted) before it finished";

fn lock_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(LOCK_DIR).join(format!("{id}.lock"))
}

/// The advisory lock (`flock(2)`, exclusive) a process holds on `<data>/backup-locks/<id>.lock`
/// for as long as it writes the backup `id`. The kernel releases it when the process ends, however
/// it ends (kill -9, OOM, crash), so a `running` row whose lock is free belongs to no live process
/// ([`fail_dead_backups`], review 3 F7). Dropping it removes the file and releases the lock.
pub struct RunLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Take the [`RunLock`] of backup `id` (before its `running` row is written, so a row is never
/// without its lock while its process lives).
///
/// Errors: the lock directory or file cannot be created, or the lock is held.
pub fn take_run_lock(data_dir: &Path, id: &str) -> anyhow::Result<RunLock> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = data_dir.join(LOCK_DIR);
    let created = !dir.exists();
    crate::store::private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if created {
        owned_like_data_dir(data_dir, &dir)?;
    }
    let path = lock_path(data_dir, id);
    // Readable by all (0644): another user's process (root CLI, `User=flowguard` server) only
    // opens it read-only to test the lock; the directory is 0700 anyway.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // `flock(2)` via rustix (std's `File::try_lock` needs Rust 1.89; our MSRV is 1.86).
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| anyhow!("cannot lock {}: {e}", path.display()))?;
    Ok(RunLock { _file: file, path })
}

/// Whether the lock of backup `id` is held by a live process (this one included: `flock`
/// locks belong to open files, so a second open file conflicts even within one process). An
/// unreadable lock file counts as held (never fail a backup we cannot check).
fn lock_held(data_dir: &Path, id: &str) -> bool {
    match std::fs::File::open(lock_path(data_dir, id)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
        Ok(f) => {
            use rustix::fs::{flock, FlockOperation};
            match flock(&f, FlockOperation::NonBlockingLockShared) {
                Ok(()) => {
                    let _ = flock(&f, FlockOperation::Unlock);
                    false
                }
                Err(_) => true,
            }
        }
    }
}

/// Mark `failed` ([`INTERRUPTED`]) every `running` backup whose [`RunLock`] no live process
/// holds, and remove its lock file. Called at `serve` start, before a backup starts and when the
/// list is read, so a killed backup never blocks the next ones. Returns how many. Blocking.
pub fn fail_dead_backups(catalog: &Catalog, data_dir: &Path) -> usize {
    let ids = match catalog.blocking(|c| snap::running_backup_ids(c)) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot list running backups");
            return 0;
        }
    };
    let mut n = 0;
    for id in ids {
        if lock_held(data_dir, &id) {
            continue;
        }
        let now = now_rfc3339();
        match catalog.blocking(|c| snap::fail_backup_interrupted(c, &id, INTERRUPTED, &now)) {
            Ok(k) => n += k,
            Err(e) => {
                tracing::error!(backup = %id, error = %e, "cannot mark an interrupted backup failed")
            }
        }
        let _ = std::fs::remove_file(lock_path(data_dir, &id));
    }
    n
}

/// Write a backup for the row `id` (already `running`, its [`RunLock`] held by the caller) into
/// `to` with the catalog audit row of [`create_recorded`], then mark the row `done` or `failed`.
/// Blocking.
#[allow(clippy::too_many_arguments)]
fn run_cataloged(
    settings: &crate::config::Settings,
    master: &MasterKey,
    catalog: &Catalog,
    id: &str,
    to: &Path,
    tenants: Option<&[TenantId]>,
    actor: &crate::audit::Actor,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let res = create_recorded(
        settings,
        master,
        catalog,
        Some(id),
        to,
        tenants,
        actor,
        progress,
    );
    let now = now_rfc3339();
    let mark = match &res {
        Ok(s) => {
            let dir = s.dir.display().to_string();
            let bytes = i64::try_from(s.bytes).unwrap_or(i64::MAX);
            let ms = i64::try_from(s.duration_ms).unwrap_or(i64::MAX);
            catalog.blocking(|c| {
                snap::finish_backup_done(c, id, &dir, bytes, ms, &s.manifest_sha256, &now)
            })
        }
        Err(e) => {
            let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            let msg = format!("{e:#}");
            catalog.blocking(|c| snap::finish_backup_failed(c, id, &msg, ms, &now))
        }
    };
    if let Err(e) = mark {
        tracing::error!(backup = id, error = %e, "cannot record the backup's outcome");
    }
    match &res {
        Ok(s) => {
            tracing::info!(backup = id, dir = %s.dir.display(), bytes = s.bytes, "backup written")
        }
        Err(e) => tracing::error!(backup = id, error = %format!("{e:#}"), "backup failed"),
    }
    res
}

/// `flowguard backup create`: record a `running` backup (trigger `cli`) in the live catalog,
/// write it into `to` and record its outcome, like API backups, so it is listed by
/// `GET /api/v1/platform/backups` (review 3). It runs beside an API or scheduled backup (the
/// directory names never collide); while it runs those are refused as `backup_running`.
/// Blocking.
///
/// Errors: as [`create_blocking`]; the row and the audit row are written either way.
#[allow(clippy::too_many_arguments)]
pub fn create_cli(
    settings: &crate::config::Settings,
    master: &MasterKey,
    catalog: &Catalog,
    to: &Path,
    tenants: Option<&[TenantId]>,
    actor: &crate::audit::Actor,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Summary> {
    fail_dead_backups(catalog, &settings.data_dir);
    let id = crate::domain::new_object_id();
    let lock = take_run_lock(&settings.data_dir, &id)?;
    let now = now_rfc3339();
    catalog
        .blocking(|c| snap::insert_backup(c, &id, "cli", &now))
        .context("cannot record the backup in the catalog")?;
    let res = run_cataloged(settings, master, catalog, &id, to, tenants, actor, progress);
    drop(lock);
    res
}

/// Write a backup for the row `id` (already `running`, its lock held) into `[backup] dir`.
fn run_started_blocking(
    state: &crate::service::AppState,
    id: &str,
    actor: &crate::audit::Actor,
) -> anyhow::Result<Summary> {
    run_cataloged(
        &state.settings,
        &state.master,
        &state.catalog,
        id,
        &state.settings.backup_dir(),
        None,
        actor,
        &|_| {},
    )
}

/// `POST /api/v1/platform/backups`: record a `running` backup and write it in the background
/// (a blocking task) into `[backup] dir`. Returns the new row.
///
/// Errors: 409 `backup_running` while another backup (API or schedule) runs.
pub async fn start_api(
    state: &std::sync::Arc<crate::service::AppState>,
    ctx: &crate::service::Caller,
) -> crate::error::ApiResult<BackupRow> {
    use crate::error::{ApiError, ErrorCode};
    let id = crate::domain::new_object_id();
    let st = state.clone();
    let i = id.clone();
    let lock = tokio::task::spawn_blocking(move || {
        fail_dead_backups(&st.catalog, &st.settings.data_dir);
        take_run_lock(&st.settings.data_dir, &i)
    })
    .await
    .map_err(|e| ApiError::internal(format!("backup start: {e}")))?
    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let (i, now) = (id.clone(), now_rfc3339());
    let started = state
        .catalog
        .run(move |c| snap::start_backup(c, &i, "api", &now))
        .await?;
    if !started {
        drop(lock);
        return Err(ApiError::new(
            ErrorCode::BackupRunning,
            "a backup is running already; try again when it has finished",
        ));
    }
    let i = id.clone();
    let row = state
        .catalog
        .run(move |c| snap::find_backup(c, &i))
        .await?
        .ok_or_else(ApiError::not_found)?;
    let st = state.clone();
    let actor = ctx.actor();
    tokio::task::spawn_blocking(move || {
        // The outcome is in the row and the audit row.
        let _ = run_started_blocking(&st, &id, &actor);
        drop(lock);
    });
    Ok(row)
}

/// `GET /api/v1/platform/backups`: every recorded backup, newest first.
pub async fn list_api(
    state: &std::sync::Arc<crate::service::AppState>,
) -> crate::error::ApiResult<Vec<BackupRow>> {
    let st = state.clone();
    // A backup whose process was killed is shown failed at once, not `running` forever.
    let _ =
        tokio::task::spawn_blocking(move || fail_dead_backups(&st.catalog, &st.settings.data_dir))
            .await;
    Ok(state.catalog.run(|c| snap::list_backups(c)).await?)
}

/// Mark backups left `running` by a process that is gone `failed` ([`fail_dead_backups`]; a
/// CLI backup still running while `serve` restarts keeps its row). Called when `serve` starts
/// its jobs. Returns how many.
pub fn fail_interrupted_blocking(state: &crate::service::AppState) -> usize {
    fail_dead_backups(&state.catalog, &state.settings.data_dir)
}

/// Delete the oldest backups under `dir` beyond the newest `keep` (at least 1 is always kept).
/// Only **full backups this deployment made** are counted and deleted ([`own_full_backups`]):
/// a directory named exactly `flowguard-backup-<yyyymmddThhmmssZ>` (optionally `-<n>`) whose
/// `manifest.json` is of this binary's format, selects every tenant and carries a signature by
/// `signer`. Anything else there (an operator's renamed copy, a `--tenant` backup, a partial or
/// foreign directory) is neither counted nor touched. Returns the deleted directories, oldest
/// first.
///
/// Errors: the first directory that cannot be removed (the ones before it are gone).
pub fn prune(dir: &Path, keep: usize, signer: &AuditSigner) -> std::io::Result<Vec<PathBuf>> {
    let all = own_full_backups(dir, signer);
    let excess = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for p in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&p)?;
        removed.push(p);
    }
    Ok(removed)
}

/// Whether `name` is exactly a backup directory name this binary writes:
/// `flowguard-backup-` + `yyyymmddThhmmssZ`, optionally followed by `-<digits>`.
pub fn is_backup_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
        return false;
    };
    let b = rest.as_bytes();
    if b.len() < 16 {
        return false;
    }
    let stamp_ok = b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    let tail = &b[16..];
    stamp_ok
        && (tail.is_empty()
            || (tail.len() > 1 && tail[0] == b'-' && tail[1..].iter().all(u8::is_ascii_digit)))
}

/// Full backups under `dir` made by the deployment whose audit signer is `signer`, oldest first:
/// exact backup directory names ([`is_backup_dir_name`]) holding a manifest of
/// [`FORMAT_VERSION`] that selects every tenant, names `signer`'s key id and whose
/// `manifest.sig` verifies with it.
pub fn own_full_backups(dir: &Path, signer: &AuditSigner) -> Vec<PathBuf> {
    let key_id = signer.key_id();
    list_complete(dir)
        .into_iter()
        .filter(|p| {
            let Ok((bytes, m)) = read_manifest(p) else {
                return false;
            };
            if m.format_version != FORMAT_VERSION
                || m.tenants_selected.is_some()
                || m.signing_key_id != key_id
            {
                return false;
            }
            let Ok(sig_hex) = std::fs::read_to_string(p.join(SIGNATURE)) else {
                return false;
            };
            hex::decode(sig_hex.trim())
                .is_ok_and(|sig| audit_signing::verify(signer.public_key(), &bytes, &sig))
        })
        .collect()
}

/// The `backup` job: one backup into `[backup] dir` (skipped when another runs), then, when it
/// succeeded, delete the oldest complete backups there beyond `[backup] keep` (and their
/// catalog rows). Returns 1 when a backup was written, else 0. Blocking.
pub fn scheduled_job_blocking(state: &crate::service::AppState) -> usize {
    let id = crate::domain::new_object_id();
    fail_dead_backups(&state.catalog, &state.settings.data_dir);
    let lock = match take_run_lock(&state.settings.data_dir, &id) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "scheduled backup not started");
            return 0;
        }
    };
    let now = now_rfc3339();
    match state
        .catalog
        .blocking(|c| snap::start_backup(c, &id, "schedule", &now))
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("scheduled backup skipped: another backup is running");
            return 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record the scheduled backup");
            return 0;
        }
    }
    let actor = crate::service::job_actor(BACKUP_JOB);
    let res = run_started_blocking(state, &id, &actor);
    drop(lock);
    if res.is_err() {
        return 0;
    }
    match prune(
        &state.settings.backup_dir(),
        state.settings.backup.keep,
        &state.audit_signer,
    ) {
        Ok(removed) => {
            for p in removed {
                let d = p.display().to_string();
                tracing::info!(dir = %d, "old backup deleted (backup.keep)");
                if let Err(e) = state.catalog.blocking(|c| snap::forget_backup_dir(c, &d)) {
                    tracing::error!(error = %e, "cannot forget a deleted backup");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot delete old backups (backup.keep)"),
    }
    1
}

/// What a successful verification saw.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup directory.
    pub dir: PathBuf,
    /// Master key id of the backup.
    pub master_key_id: String,
    /// Stores checked.
    pub stores: usize,
    /// Files whose hash matched.
    pub files: usize,
    /// Total bytes.
    pub bytes: u64,
    /// `restore` only: the backup holds a license and the configured license file is outside
    /// the new data dir (it was left alone; the license is at `<NEW>/license.jwt`).
    pub license_outside: bool,
}

/// Read a backup's manifest (unverified).
pub fn read_manifest(dir: &Path) -> anyhow::Result<(Vec<u8>, Manifest)> {
    let bytes = std::fs::read(dir.join(MANIFEST)).map_err(|e| {
        anyhow!(
            "{MANIFEST}: cannot read {}: {} (not a complete backup)",
            dir.display(),
            e.kind()
        )
    })?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{MANIFEST}: not a valid manifest: {e}"))?;
    Ok((bytes, m))
}

/// Verify a backup directory against `master`: the master key id, the signature of the
/// manifest (by the audit-signing key in the backup, which only `master` unwraps), every file's
/// size and SHA-256, then every store (opens with its key, `cipher_integrity_check`,
/// `integrity_check`, row counts, audit chain). Blocking.
///
/// Errors: the first problem, naming the file.
pub fn verify_blocking(dir: &Path, master: &MasterKey) -> anyhow::Result<VerifyReport> {
    let (bytes, m) = read_manifest(dir)?;
    verify_tree(dir, dir, &bytes, &m, master)
}

/// Verify the files of `m` under `root`, the manifest `bytes` against the signature in
/// `sig_dir`.
fn verify_tree(
    root: &Path,
    sig_dir: &Path,
    bytes: &[u8],
    m: &Manifest,
    master: &MasterKey,
) -> anyhow::Result<VerifyReport> {
    check_signature(root, sig_dir, bytes, m, master)?;
    for s in &m.stores {
        if !m.files.iter().any(|f| f.path == s.file) {
            bail!("{MANIFEST}: store {} has no file entry", s.file);
        }
    }
    check_all(root, &m.stores, master, Copies::Full, || {
        check_file_hashes(root, &m.files)
    })?;
    Ok(VerifyReport {
        dir: root.to_path_buf(),
        master_key_id: m.master_key_id.clone(),
        stores: m.stores.len(),
        files: m.files.len(),
        bytes: m.files.iter().map(|f| f.bytes).sum(),
        license_outside: false,
    })
}

/// The checks of a manifest that read no store: its format version, that `master` is the key
/// the backup was made under (by id, then by unwrapping the audit-signing key under `root`),
/// and the signature in `sig_dir` of the manifest `bytes` by that key.
fn check_signature(
    root: &Path,
    sig_dir: &Path,
    bytes: &[u8],
    m: &Manifest,
    master: &MasterKey,
) -> anyhow::Result<()> {
    if m.format_version > FORMAT_VERSION {
        bail!(
            "{MANIFEST}: format version {} is newer than this binary's {FORMAT_VERSION} (written by flowguard {})",
            m.format_version,
            m.binary_version
        );
    }
    if m.master_key_id != master.kek_id() {
        bail!(
            "the backup was made under master key id {}, but the given master key has id {}",
            m.master_key_id,
            master.kek_id()
        );
    }
    let key_path = safe_join(root, SIGNING_KEY_FILE)?;
    if !key_path.is_file() {
        bail!("{SIGNING_KEY_FILE}: missing");
    }
    let signer = AuditSigner::load(root, master).map_err(|_| {
        anyhow!("{SIGNING_KEY_FILE}: does not unwrap with the master key (damaged)")
    })?;
    let sig_hex = std::fs::read_to_string(sig_dir.join(SIGNATURE))
        .map_err(|e| anyhow!("{SIGNATURE}: cannot read: {}", e.kind()))?;
    let sig = hex::decode(sig_hex.trim()).map_err(|_| anyhow!("{SIGNATURE}: not hex"))?;
    if !audit_signing::verify(signer.public_key(), bytes, &sig) {
        bail!("{MANIFEST}: the signature in {SIGNATURE} does not match (manifest or signature altered)");
    }
    Ok(())
}

/// Where `restore` puts things.
pub struct RestoreTarget<'a> {
    /// The new data dir (absent or empty).
    pub data_dir: &'a Path,
    /// Where to write the license file.
    pub license_file: PathBuf,
    /// Where to install the master key (`None`: it is configured outside the data dir and is
    /// not copied).
    pub master_key_dest: Option<PathBuf>,
}

/// Restore a backup into an empty or absent data dir. **Before writing anything** it checks that
/// `master` is the key the backup was made under (the manifest's key id, and it unwraps the
/// backup's audit-signing key) and the manifest's signature; then it copies the files, installs
/// the master key when asked, and runs every check of [`verify_blocking`] once, on the restored
/// files (file hashes, SQLCipher's and SQLite's integrity checks, row counts, audit chains).
/// Blocking.
///
/// Errors: the first problem. Found before copying: nothing was written. Found while copying
/// or verifying the restored files (a damaged backup): the restored files are removed again.
pub fn restore_blocking(
    dir: &Path,
    target: &RestoreTarget<'_>,
    master: &MasterKey,
) -> anyhow::Result<VerifyReport> {
    let (bytes, m) = read_manifest(dir)?;
    if m.master_key_id != master.kek_id() {
        bail!(
            "the backup was made under master key id {}, but the given master key has id {}; nothing was written",
            m.master_key_id,
            master.kek_id()
        );
    }
    let nd = target.data_dir;
    if nd.symlink_metadata().is_ok() && !nd.exists() {
        let to = std::fs::read_link(nd)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        bail!(
            "{} is a symbolic link to a missing directory ({to}): create that directory or give another --data-dir; nothing was written",
            nd.display()
        );
    }
    let existed = nd.exists();
    if existed {
        let mut rd =
            std::fs::read_dir(nd).with_context(|| format!("cannot read {}", nd.display()))?;
        if rd.next().is_some() {
            bail!(
                "{} is not empty; restore only into an empty or absent directory",
                nd.display()
            );
        }
    }
    // Before writing: the key (id, and it unwraps the backup's signing key) and the signature.
    // The content checks run once, on the restored files (below); a backup that fails them is
    // removed again, so nothing half-restored is left.
    check_signature(dir, dir, &bytes, &m, master)
        .map_err(|e| anyhow!("{e:#}; nothing was written"))?;
    let restored = (|| -> anyhow::Result<VerifyReport> {
        {
            let _span = tracing::debug_span!("restore.copy").entered();
            copy_into(dir, nd, &m, target, master)?;
        }
        // The restored copy: every check of `verify`, on the files just written.
        let _span = tracing::debug_span!("restore.verify_restored").entered();
        verify_tree(nd, dir, &bytes, &m, master)
            .map_err(|e| anyhow!("the restored data dir does not verify: {e:#}"))
    })();
    let mut report = match restored {
        Ok(r) => r,
        Err(e) => {
            // Nothing restored is left behind: a retry needs an empty or absent directory.
            let cleaned = if existed {
                std::fs::read_dir(nd).and_then(|rd| {
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.is_dir() && !p.is_symlink() {
                            std::fs::remove_dir_all(&p)?;
                        } else {
                            std::fs::remove_file(&p)?;
                        }
                    }
                    Ok(())
                })
            } else {
                std::fs::remove_dir_all(nd)
            };
            return Err(match cleaned {
                Ok(()) => anyhow!("{e:#}; the restored files were removed"),
                Err(c) => anyhow!(
                    "{e:#}; removing the restored files from {} failed too ({c}): empty it before retrying",
                    nd.display()
                ),
            });
        }
    };
    report.license_outside = m.files.iter().any(|f| f.path == LICENSE_FILE)
        && target.license_file != nd.join(LICENSE_FILE);
    Ok(report)
}

/// Copy the verified backup files of `m` from `dir` into the new data dir `nd` and install the
/// master key when asked (`target.master_key_dest`). The license goes to `<nd>/license.jwt`
/// only: a configured `license.file` elsewhere is never written (review 3, F6).
fn copy_into(
    dir: &Path,
    nd: &Path,
    m: &Manifest,
    target: &RestoreTarget<'_>,
    master: &MasterKey,
) -> anyhow::Result<()> {
    crate::store::private_dir(nd).with_context(|| format!("cannot create {}", nd.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(nd, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set mode 0700 on {}", nd.display()))?;
    }
    for f in &m.files {
        let from = safe_join(dir, &f.path)?;
        copy_synced(&from, &safe_join(nd, &f.path)?)
            .with_context(|| format!("restoring {}", f.path))?;
    }
    if let Some(dest) = &target.master_key_dest {
        if !dest.exists() {
            if let Some(d) = dest.parent() {
                crate::store::private_dir(d)?;
            }
            master
                .install_at(dest)
                .map_err(|e| anyhow!("installing the master key: {e}"))?;
        }
    }
    for d in walk_dirs(nd)? {
        sync_dir(&d);
    }
    Ok(())
}

/// Backup directories under `dir` by name ([`is_backup_dir_name`]; partial ones are
/// dot-prefixed and skipped, other names are never listed), oldest first. Their content is not
/// checked: see [`own_full_backups`].
pub fn list_complete(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    !p.is_symlink()
                        && p.is_dir()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(is_backup_dir_name)
                })
                .collect()
        })
        .unwrap_or_default();
    // Oldest first: by stamp, then by the same-second suffix as a number (`-10` after `-9`).
    out.sort_by_key(|p| {
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let stamp_end = (DIR_PREFIX.len() + 16).min(n.len());
        let suffix = n
            .get(stamp_end + 1..)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(1);
        (n[..stamp_end].to_string(), suffix)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::is_backup_dir_name;

    #[test]
    fn backup_dir_names_are_exact() {
        assert!(is_backup_dir_name("flowguard-backup-20261205T001100Z"));
        assert!(is_backup_dir_name("flowguard-backup-20261205T001100Z-2"));
        for n in [
            "flowguard-backup-0-archive-DO-NOT-DELETE",
            "flowguard-backup-notes-keepme",
            "flowguard-backup-20261205T001100Z-before-upgrade",
            "flowguard-backup-20261205T001100Z-",
            "flowguard-backup-20261205T001100",
            ".flowguard-backup-20261205T001100Z.partial",
        ] {
            assert!(!is_backup_dir_name(n), "{n}");
        }
    }
}
