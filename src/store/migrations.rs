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
        // Issue 4 (key lifecycle): when a version was retired, and the staging columns of a
        // master key rotation (the key re-wrapped under the next master key, and that key's id).
        M::up(
            "
ALTER TABLE tenant_keys ADD COLUMN retired_at TEXT;
ALTER TABLE tenant_keys ADD COLUMN next_nonce BLOB;
ALTER TABLE tenant_keys ADD COLUMN next_wrapped BLOB;
ALTER TABLE tenant_keys ADD COLUMN next_kek TEXT;
",
        ),
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
        ),
        // Issue 5: the purge anchor of the audit chain (the catalog chain is never purged; the
        // table exists so chain walks work the same on both stores).
        M::up(AUDIT_ANCHOR_TABLE),
        // Issue 23: the offline trial (once per deployment: one row ever), the latest time the
        // catalog has seen (a clock moved back cannot restart or extend the trial), and whether
        // a tenant's plan follows the license (the bootstrap tenant, until a PlatformAdmin sets
        // its plan). An existing one-tenant install on `free` follows the license from now on.
        M::up(
            "
CREATE TABLE license_trial (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    trial_id   TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    started_by TEXT NOT NULL
);
CREATE TABLE clock_high_water (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    latest_seen INTEGER NOT NULL
);
ALTER TABLE tenants ADD COLUMN plan_follows_license INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET plan_follows_license = 1
 WHERE plan = 'free' AND (SELECT count(*) FROM tenants) = 1;
",
        ),
        // Issue 19: backups started from the API or the scheduled job (status running|done|failed).
        M::up(
            "
CREATE TABLE backups (
    id              TEXT PRIMARY KEY,
    trigger         TEXT NOT NULL CHECK (trigger IN ('api','schedule')),
    status          TEXT NOT NULL CHECK (status IN ('running','done','failed')),
    dir             TEXT,
    bytes           INTEGER,
    duration_ms     INTEGER,
    error           TEXT,
    manifest_sha256 TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX backups_started ON backups(started_at);
",
        ),
        // Issue 19 (review 3): `flowguard backup create` records its backups too (trigger `cli`).
        // SQLite cannot change a CHECK in place: the table is rebuilt.
        M::up(
            "
CREATE TABLE backups_new (
    id              TEXT PRIMARY KEY,
    trigger         TEXT NOT NULL CHECK (trigger IN ('api','schedule','cli')),
    status          TEXT NOT NULL CHECK (status IN ('running','done','failed')),
    dir             TEXT,
    bytes           INTEGER,
    duration_ms     INTEGER,
    error           TEXT,
    manifest_sha256 TEXT,
    started_at      TEXT NOT NULL,
    finished_at     TEXT
);
INSERT INTO backups_new SELECT id, trigger, status, dir, bytes, duration_ms, error,
       manifest_sha256, started_at, finished_at FROM backups ORDER BY rowid;
DROP TABLE backups;
ALTER TABLE backups_new RENAME TO backups;
CREATE INDEX backups_started ON backups(started_at);
",
        ),
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
        M::up(
            "
CREATE TABLE flows (
    id              TEXT PRIMARY KEY,
    application_id  TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    current_version INTEGER NOT NULL,
    deleted_at      TEXT,
    schedule_cron   TEXT,
    schedule_tz     TEXT,
    schedule_anchor INTEGER,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX flows_app ON flows(application_id);
CREATE TABLE flow_versions (
    flow_id    TEXT NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    tags       TEXT NOT NULL,
    source     TEXT NOT NULL,
    steps      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (flow_id, version)
);
CREATE TABLE runs (
    id             TEXT PRIMARY KEY,
    flow_id        TEXT NOT NULL REFERENCES flows(id),
    application_id TEXT NOT NULL,
    flow_version   INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('queued','running','passed','failed','cancelled')),
    trigger        TEXT NOT NULL CHECK (trigger IN ('manual','schedule','webhook')),
    triggered_by   TEXT,
    agent_token_id TEXT,
    reason         TEXT,
    error          TEXT,
    queued_at      TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    last_heartbeat INTEGER
);
CREATE INDEX runs_app_status ON runs(application_id, status, queued_at);
CREATE TABLE run_steps (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('passed','failed','skipped','not_evaluated')),
    duration_ms INTEGER,
    error       TEXT,
    console     TEXT,
    network     TEXT,
    reason      TEXT,
    reported_at TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE screenshots (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_index  INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (run_id, step_index)
);
CREATE TABLE variables (
    application_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    secret         INTEGER NOT NULL,
    value          TEXT,
    ciphertext     BLOB,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (application_id, name)
);
CREATE TABLE webhook_tokens (
    id         TEXT PRIMARY KEY,
    flow_id    TEXT NOT NULL REFERENCES flows(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT
);
",
        ),
        // SCIM 2.0 provisioning (issue 6): `email` holds `userName`, `display_name` holds
        // `displayName`, `active` gates login; the other SCIM attributes (name parts, emails,
        // enterprise extension …) live in `scim_attrs` as canonical JSON, and `scim_version`
        // is the `meta.version` ETag counter. `active_unset` = 1: SCIM `active` is unassigned
        // (and the user cannot log in).
        M::up(
            "
ALTER TABLE users ADD COLUMN external_id TEXT;
ALTER TABLE users ADD COLUMN scim_attrs TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN scim_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN active_unset INTEGER NOT NULL DEFAULT 0;
CREATE INDEX users_external_id ON users(external_id);
CREATE INDEX users_created ON users(created_at, id);
",
        ),
        // Issue 7: directory login. One configuration row (secrets as envelope ciphertexts)
        // and the link from a directory entry (normalised DN) to a member.
        M::up(
            "
CREATE TABLE ldap_config (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    config        TEXT NOT NULL,
    bind_password BLOB NOT NULL,
    client_key    BLOB,
    updated_at    TEXT NOT NULL,
    updated_by    TEXT NOT NULL
);
CREATE TABLE ldap_identities (
    user_id       TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    dn_key        TEXT NOT NULL UNIQUE,
    dn            TEXT NOT NULL,
    username      TEXT NOT NULL,
    last_login_at TEXT NOT NULL
);
",
        ),
        // Issue 4 (key lifecycle): the key-version fence. Ciphertexts sealed under a DEK version
        // below `min_dek_version` are refused on write, so a rotation's rewrap cannot miss one.
        M::up(
            "
CREATE TABLE key_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    min_dek_version INTEGER NOT NULL
);
INSERT INTO key_state (id, min_dek_version) VALUES (1, 0);
",
        ),
        // Issue 5: the purge anchor of the audit chain.
        M::up(AUDIT_ANCHOR_TABLE),
        // Issue 11: AI checkpoint verdicts on steps (status `error` added, so the table is
        // rebuilt: SQLite cannot alter a CHECK), and the tenant's own AI endpoint.
        M::up(
            "
CREATE TABLE run_steps_v2 (
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('passed','failed','skipped','not_evaluated','error')),
    reported_status TEXT CHECK (reported_status IN ('passed','failed','skipped')),
    duration_ms     INTEGER,
    error           TEXT,
    console         TEXT,
    network         TEXT,
    reason          TEXT,
    reported_at     TEXT,
    verdict         TEXT CHECK (verdict IN ('pass','fail')),
    confidence      REAL CHECK (confidence >= 0 AND confidence <= 1),
    rationale       TEXT,
    ai_model        TEXT,
    ai_bytes_sent   INTEGER,
    ai_latency_ms   INTEGER,
    ai_outcome      TEXT,
    ai_error        TEXT,
    evaluated_at    TEXT,
    PRIMARY KEY (run_id, idx)
);
INSERT INTO run_steps_v2 (run_id, idx, status, reported_status, duration_ms, error, console, network, reason, reported_at)
    SELECT run_id, idx, status,
           CASE WHEN status IN ('passed','failed','skipped') THEN status END,
           duration_ms, error, console, network, reason, reported_at
      FROM run_steps;
DROP TABLE run_steps;
ALTER TABLE run_steps_v2 RENAME TO run_steps;
CREATE TABLE ai_endpoint (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    kind        TEXT NOT NULL CHECK (kind IN ('openai-chat','anthropic-messages')),
    base_url    TEXT NOT NULL,
    model       TEXT NOT NULL,
    api_key     BLOB,
    ca_pem      TEXT,
    timeout_ms  INTEGER NOT NULL,
    max_tokens  INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL
);
",
        ),
        // Issue 12 (P2): run lists page newest first by (queued_at, id). The old index put
        // `status` before `queued_at`, so an unfiltered page sorted every run of the application
        // in a temporary B-tree on each request; these two serve each list shape (and the
        // claim's oldest-queued lookup) in index order.
        M::up(
            "
CREATE INDEX runs_app_queued ON runs(application_id, queued_at, id);
DROP INDEX runs_app_status;
CREATE INDEX runs_app_status ON runs(application_id, status, queued_at, id);
",
        ),
        // Issue 21: OpenID Connect single sign-on. One configuration row (client secret as an
        // envelope ciphertext), the link (issuer, subject) → member, and the pending sign-ins
        // (state → nonce, PKCE verifier, browser binding; single use, 10 minutes).
        M::up(
            "
CREATE TABLE oidc_config (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    config        TEXT NOT NULL,
    client_secret BLOB NOT NULL,
    updated_at    TEXT NOT NULL,
    updated_by    TEXT NOT NULL
);
CREATE TABLE oidc_identities (
    user_id       TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    linked_at     TEXT NOT NULL,
    last_login_at TEXT NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE TABLE oidc_pending (
    state_hash   TEXT PRIMARY KEY,
    binding_hash TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    used_at      INTEGER
);
",
        ),
        // Issue 20: ticket integrations. One integration per application (token sealed), the
        // tickets FlowGuard tracks (one open per failure signature) and the delivery outbox.
        M::up(
            "
CREATE TABLE integrations (
    application_id   TEXT PRIMARY KEY REFERENCES applications(id) ON DELETE CASCADE,
    provider         TEXT NOT NULL CHECK (provider IN ('jira','github','gitlab','azure-devops')),
    base_url         TEXT NOT NULL,
    project          TEXT NOT NULL,
    email            TEXT,
    token            BLOB NOT NULL,
    ca_pem           TEXT,
    token_expires_at TEXT,
    labels           TEXT NOT NULL,
    fields           TEXT NOT NULL,
    rules            TEXT NOT NULL,
    auth_failed_at   TEXT,
    updated_at       TEXT NOT NULL,
    updated_by       TEXT NOT NULL
);
CREATE TABLE tickets (
    id              TEXT PRIMARY KEY,
    application_id  TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    flow_id         TEXT NOT NULL,
    signature       TEXT NOT NULL,
    remote_id       TEXT,
    key             TEXT,
    url             TEXT,
    open            INTEGER NOT NULL DEFAULT 1,
    last_comment_at INTEGER,
    created_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX tickets_open_signature ON tickets(application_id, signature) WHERE open = 1;
CREATE TABLE ticket_outbox (
    id              TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    application_id  TEXT NOT NULL,
    ticket_id       TEXT NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('create','comment','recovery')),
    status          TEXT NOT NULL CHECK (status IN ('pending','filed','failed')),
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    screenshot_id   TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX ticket_outbox_due ON ticket_outbox(status, next_attempt_at);
CREATE INDEX ticket_outbox_run ON ticket_outbox(run_id, created_at);
",
        ),
        // Issue 22: status `error` (an infrastructure failure of the runner, reason
        // `runner_error`) and `retry_of` (the run an automatic retry repeats). SQLite cannot
        // alter a CHECK, so the table is rebuilt; migrations run before `foreign_keys = ON`
        // (see `store::open_with`), so dropping the old table cascades nothing.
        M::up(
            "
CREATE TABLE runs_v2 (
    id             TEXT PRIMARY KEY,
    flow_id        TEXT NOT NULL REFERENCES flows(id),
    application_id TEXT NOT NULL,
    flow_version   INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('queued','running','passed','failed','cancelled','error')),
    trigger        TEXT NOT NULL CHECK (trigger IN ('manual','schedule','webhook')),
    triggered_by   TEXT,
    agent_token_id TEXT,
    reason         TEXT,
    error          TEXT,
    queued_at      TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    last_heartbeat INTEGER,
    retry_of       TEXT
);
INSERT INTO runs_v2 (id, flow_id, application_id, flow_version, status, trigger, triggered_by, agent_token_id, reason, error, queued_at, started_at, finished_at, last_heartbeat)
    SELECT id, flow_id, application_id, flow_version, status, trigger, triggered_by, agent_token_id, reason, error, queued_at, started_at, finished_at, last_heartbeat
      FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
CREATE INDEX runs_app_queued ON runs(application_id, queued_at, id);
CREATE INDEX runs_app_status ON runs(application_id, status, queued_at, id);
CREATE INDEX runs_status ON runs(status);
",
        ),
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
