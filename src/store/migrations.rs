//! Embedded, versioned schema migrations (compiled in; version kept in `user_version`).
//! Append new steps at the end; never edit a released step.

use rusqlite_migration::{Migrations, M};

const AUDIT_TABLE: &str = "
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    ts          TEXT NOT NULL,
    actor_email TEXT,
    actor_role  TEXT,
    client_ip   TEXT,
    user_agent  TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit(ts);
CREATE INDEX audit_action ON audit(action);
";

const AUDIT_ANCHOR_TABLE: &str = "
CREATE TABLE audit_anchor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    purged_at   TEXT NOT NULL,
    purged_rows INTEGER NOT NULL
);
";

/// Catalog schema steps.
pub fn catalog() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "
CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    region     TEXT NOT NULL,
    plan       TEXT NOT NULL DEFAULT 'free' CHECK (plan IN ('free','pro','business','enterprise')),
    created_at TEXT NOT NULL
);
CREATE TABLE tenant_keys (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    version    INTEGER NOT NULL,
    purpose    TEXT NOT NULL CHECK (purpose IN ('db','dek')),
    nonce      BLOB NOT NULL,
    wrapped    BLOB NOT NULL,
    state      TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('pending','active','retired')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version, purpose)
);
CREATE TABLE platform_admins (
    id                   TEXT PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash        TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL
);
CREATE TABLE platform_sessions (
    id_hash    TEXT PRIMARY KEY,
    admin_id   TEXT NOT NULL REFERENCES platform_admins(id) ON DELETE CASCADE,
    csrf_hash  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE TABLE login_failures (
    scope        TEXT NOT NULL CHECK (scope IN ('pair','ip')),
    key          TEXT NOT NULL,
    account      TEXT,
    failures     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0,
    last_failure INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_failures_account ON login_failures(account);
",
        ),
        M::up(AUDIT_TABLE),
        // Issue 8: tenant suspension and the license revocation list.
        M::up(
            "
ALTER TABLE tenants ADD COLUMN status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','suspended'));
ALTER TABLE tenants ADD COLUMN status_changed_at TEXT;
CREATE TABLE license_revocations (
    license_id TEXT PRIMARY KEY,
    reason     TEXT,
    revoked_at TEXT NOT NULL,
    revoked_by TEXT NOT NULL
);
",
        ),        // Issue 5: the purge anchor of the audit chain (the catalog chain is never purged; the
        // table exists so chain walks work the same on both stores).
        M::up(AUDIT_ANCHOR_TABLE),
    ])
}

/// Tenant store schema steps.
pub fn tenant() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "
CREATE TABLE users (
    id                   TEXT PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name         TEXT,
    role                 TEXT NOT NULL CHECK (role IN ('owner','admin','tester','viewer')),
    password_hash        TEXT,
    source               TEXT NOT NULL DEFAULT 'local',
    active               INTEGER NOT NULL DEFAULT 1,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_hash  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE TABLE applications (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    base_url   TEXT NOT NULL,
    repo_url   TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE service_tokens (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('agent','scim')),
    application_id TEXT REFERENCES applications(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    revoked_at     TEXT,
    last_used_at   TEXT
);
",
        ),
        M::up(AUDIT_TABLE),
        // Issue 5: the purge anchor of the audit chain.
        M::up(AUDIT_ANCHOR_TABLE),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_valid() {
        assert!(super::catalog().validate().is_ok());
        assert!(super::tenant().validate().is_ok());
    }
}
