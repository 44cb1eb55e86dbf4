//! SQL for the `audit` table shared by the catalog and tenant stores (same shape, separate
//! chains). Appends run inside the caller's transaction so the row commits with the change.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::audit::{chain_hash, AuditRecord, NewAuditEvent, GENESIS_HASH};
use crate::domain::{new_object_id, now_rfc3339};

use super::StoreResult;

/// Append one event to the chain inside `tx`.
pub fn append(tx: &Transaction<'_>, ev: &NewAuditEvent) -> StoreResult<()> {
    let prev: Option<String> = tx
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    // After a purge that removed every row, the chain continues from the anchor.
    let prev = match prev {
        Some(h) => h,
        None => tx
            .query_row("SELECT hash FROM audit_anchor WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_else(|| GENESIS_HASH.to_string()),
    };
    let id = new_object_id();
    let ts = now_rfc3339();
    let a = &ev.actor;
    let hash = chain_hash(
        &prev,
        &id,
        &ts,
        a.email.as_deref(),
        a.role.as_deref(),
        a.client_ip.as_deref(),
        a.user_agent.as_deref(),
        ev.action,
        ev.target.as_deref(),
        &ev.details,
    );
    tx.execute(
        "INSERT INTO audit (id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            id,
            ts,
            a.email,
            a.role,
            a.client_ip,
            a.user_agent,
            ev.action,
            ev.target,
            ev.details.to_string(),
            prev,
            hash
        ],
    )?;
    Ok(())
}

/// Filters for listing audit rows.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Inclusive lower bound (RFC 3339 UTC, normalised).
    pub from: Option<String>,
    /// Exclusive upper bound.
    pub to: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact actor email (case-insensitive).
    pub actor: Option<String>,
    /// Return rows with `seq` below this (descending paging).
    pub before_seq: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// List rows newest first.
pub fn list(conn: &rusqlite::Connection, q: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    let mut stmt = conn.prepare(
        "SELECT seq, id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash
         FROM audit
         WHERE (?1 IS NULL OR ts >= ?1) AND (?2 IS NULL OR ts < ?2)
           AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR actor_email = ?4 COLLATE NOCASE)
           AND (?5 IS NULL OR seq < ?5)
         ORDER BY seq DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![q.from, q.to, q.action, q.actor, q.before_seq, q.limit],
        row_to_record,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Map a row selected with the column order used in [`list`].
pub fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let details: String = r.get(9)?;
    Ok(AuditRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        ts: r.get(2)?,
        actor_email: r.get(3)?,
        actor_role: r.get(4)?,
        client_ip: r.get(5)?,
        user_agent: r.get(6)?,
        action: r.get(7)?,
        target: r.get(8)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

/// Highest `seq` in the chain (0 when empty): the snapshot bound of an export.
pub fn max_seq(conn: &rusqlite::Connection) -> StoreResult<i64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get(0))?)
}

/// Rows with `after_seq < seq ≤ max_seq` and `from ≤ ts < to` (each bound optional), oldest
/// first, at most `limit`: one page of an export or a chain walk.
pub fn page_asc(
    conn: &rusqlite::Connection,
    from: Option<&str>,
    to: Option<&str>,
    after_seq: i64,
    max_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash
         FROM audit
         WHERE seq > ?1 AND seq <= ?2 AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts < ?4)
         ORDER BY seq ASC LIMIT ?5",
    )?;
    let rows = stmt.query_map(params![after_seq, max_seq, from, to, limit], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Like [`page_asc`] but with `details` as the stored JSON text (for the export writer).
pub fn page_asc_export(
    conn: &rusqlite::Connection,
    from: Option<&str>,
    to: Option<&str>,
    after_seq: i64,
    max_seq: i64,
    limit: u32,
) -> StoreResult<Vec<crate::audit::export::ExportRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, ts, actor_email, actor_role, client_ip, user_agent, action, target, details, prev_hash, hash
         FROM audit
         WHERE seq > ?1 AND seq <= ?2 AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts < ?4)
         ORDER BY seq ASC LIMIT ?5",
    )?;
    let rows = stmt.query_map(params![after_seq, max_seq, from, to, limit], |r| {
        Ok(crate::audit::export::ExportRow {
            seq: r.get(0)?,
            id: r.get(1)?,
            ts: r.get(2)?,
            actor_email: r.get(3)?,
            actor_role: r.get(4)?,
            client_ip: r.get(5)?,
            user_agent: r.get(6)?,
            action: r.get(7)?,
            target: r.get(8)?,
            details: r.get(9)?,
            prev_hash: r.get(10)?,
            hash: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Timestamp (RFC 3339) of the newest audit row, if any.
pub fn newest_ts(conn: &rusqlite::Connection) -> StoreResult<Option<String>> {
    Ok(conn.query_row("SELECT max(ts) FROM audit", [], |r| r.get(0))?)
}

/// The chain's purge anchor: `(seq, hash)` of the last purged row, if a purge happened. A
/// chain walk starts from this hash instead of the genesis hash.
pub fn anchor(conn: &rusqlite::Connection) -> StoreResult<Option<(i64, String)>> {
    Ok(conn
        .query_row("SELECT seq, hash FROM audit_anchor WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Append an audit row on its own (e.g. `login.failure`), in a tenant store. (The catalog's
/// equivalent is `catalog::append_audit`.)
pub fn append_audit(c: &mut rusqlite::Connection, ev: &NewAuditEvent) -> StoreResult<()> {
    let tx = super::write_tx(c)?;
    append(&tx, ev)?;
    tx.commit()?;
    Ok(())
}

/// What a purge removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Purged {
    /// Rows deleted.
    pub rows: u64,
    /// New anchor `(seq, hash)` (the last deleted row).
    pub anchor_seq: i64,
    /// Hash of the last deleted row.
    pub anchor_hash: String,
}

/// Delete the oldest rows of the chain whose `ts` is before `cutoff` — only a prefix, so the
/// chain stays contiguous: it stops at the first row inside the retention window — record the
/// last deleted row as the anchor, and append `ev` (its details gain `purged_rows`,
/// `anchor_seq`, `anchor_hash`) in the same transaction. Nothing to delete → `None`, no row.
pub fn purge_before(
    c: &mut rusqlite::Connection,
    cutoff: &str,
    ev: &NewAuditEvent,
) -> StoreResult<Option<Purged>> {
    let tx = super::write_tx(c)?;
    let r = purge_in(&tx, cutoff, ev)?;
    tx.commit()?;
    Ok(r)
}

/// [`purge_before`] inside the caller's transaction (the caller commits), so a purge of runs and
/// of audit rows commits together.
pub fn purge_in(
    tx: &Transaction<'_>,
    cutoff: &str,
    ev: &NewAuditEvent,
) -> StoreResult<Option<Purged>> {
    let first_kept: Option<i64> =
        tx.query_row("SELECT min(seq) FROM audit WHERE ts >= ?1", [cutoff], |r| {
            r.get(0)
        })?;
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit WHERE seq < coalesce(?1, 9223372036854775807)
             ORDER BY seq DESC LIMIT 1",
            [first_kept],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, hash)) = last else {
        return Ok(None);
    };
    let rows = tx.execute("DELETE FROM audit WHERE seq <= ?1", [seq])? as u64;
    tx.execute(
        "INSERT INTO audit_anchor (id, seq, hash, purged_at, purged_rows) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2, purged_at = ?3,
           purged_rows = audit_anchor.purged_rows + ?4",
        params![seq, hash, now_rfc3339(), rows as i64],
    )?;
    let mut ev = ev.clone();
    if let Some(o) = ev.details.as_object_mut() {
        o.insert("purged_rows".into(), serde_json::json!(rows));
        o.insert("anchor_seq".into(), serde_json::json!(seq));
        o.insert("anchor_hash".into(), serde_json::json!(hash));
    }
    append(tx, &ev)?;
    Ok(Some(Purged {
        rows,
        anchor_seq: seq,
        anchor_hash: hash,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify_chain, Actor, ChainState};

    fn store() -> rusqlite::Connection {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        super::super::migrations::tenant()
            .to_latest(&mut c)
            .unwrap();
        c
    }

    fn add(c: &mut rusqlite::Connection, n: usize) {
        let actor = Actor {
            email: Some("o@x.example".into()),
            ..Default::default()
        };
        for i in 0..n {
            let tx = c.transaction().unwrap();
            let ev = NewAuditEvent::new(
                &actor,
                "application.create",
                Some(format!("application:{i}")),
            )
            .details(serde_json::json!({"i": i, "name": "a,b \"c\"\n"}));
            append(&tx, &ev).unwrap();
            tx.commit().unwrap();
        }
    }

    fn walk(c: &rusqlite::Connection) -> ChainState {
        let max = max_seq(c).unwrap();
        let mut st = ChainState {
            last_hash: anchor(c).unwrap().map(|a| a.1),
            ..Default::default()
        };
        let mut after = 0;
        loop {
            let page = page_asc(c, None, None, after, max, 2).unwrap();
            if page.is_empty() {
                break;
            }
            for r in &page {
                verify_chain(&mut st, r);
                after = r.seq;
            }
        }
        st
    }

    #[test]
    fn intact_chain_verifies() {
        let mut c = store();
        add(&mut c, 5);
        let st = walk(&c);
        assert_eq!(st.rows, 5);
        assert!(st.first_bad.is_none());
    }

    #[test]
    fn edited_row_is_named() {
        let mut c = store();
        add(&mut c, 5);
        c.execute("UPDATE audit SET details = '{\"i\":99}' WHERE seq = 3", [])
            .unwrap();
        let bad = walk(&c).first_bad.unwrap();
        assert_eq!(bad.seq, 3);
        assert!(bad.reason.contains("edited"), "{}", bad.reason);
    }

    #[test]
    fn removed_or_reordered_row_is_named() {
        let mut c = store();
        add(&mut c, 5);
        c.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let bad = walk(&c).first_bad.unwrap();
        assert_eq!(bad.seq, 3);
        assert!(bad.reason.contains("removed"), "{}", bad.reason);
        let mut c = store();
        add(&mut c, 5);
        c.execute("UPDATE audit SET seq = 100 WHERE seq = 1", [])
            .unwrap();
        let bad = walk(&c).first_bad.unwrap();
        assert_eq!(bad.seq, 2);
    }

    #[test]
    fn purge_keeps_the_chain_verifiable() {
        let mut c = store();
        add(&mut c, 5);
        // Age the first three rows.
        c.execute(
            "UPDATE audit SET ts = '2000-01-01T00:00:00.000Z' WHERE seq <= 3",
            [],
        )
        .unwrap();
        // (their hashes no longer match: recompute so only the purge is under test)
        let rows = page_asc(&c, None, None, 0, 10, 10).unwrap();
        let mut prev = crate::audit::GENESIS_HASH.to_string();
        for mut r in rows {
            r.prev_hash = prev.clone();
            r.hash = crate::audit::record_hash(&r);
            c.execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                params![r.prev_hash, r.hash, r.seq],
            )
            .unwrap();
            prev = r.hash;
        }
        assert!(walk(&c).first_bad.is_none());
        let ev = NewAuditEvent::new(&Actor::default(), "audit.purge", None);
        let p = purge_before(&mut c, "2020-01-01T00:00:00.000Z", &ev)
            .unwrap()
            .unwrap();
        assert_eq!((p.rows, p.anchor_seq), (3, 3));
        let st = walk(&c);
        assert!(st.first_bad.is_none(), "{:?}", st.first_bad);
        assert_eq!(st.rows, 3); // 2 kept + the purge row
                                // Nothing older left: no-op, no row.
        assert!(purge_before(&mut c, "2020-01-01T00:00:00.000Z", &ev)
            .unwrap()
            .is_none());
        // Purging every row: the purge row links to the anchor.
        let p = purge_before(&mut c, "2999-01-01T00:00:00.000Z", &ev)
            .unwrap()
            .unwrap();
        assert_eq!(p.rows, 3);
        let st = walk(&c);
        assert!(st.first_bad.is_none(), "{:?}", st.first_bad);
        assert_eq!(st.rows, 1);
        // Without the anchor the walk would fail: the anchor is what keeps it verifiable.
        c.execute("DELETE FROM audit_anchor", []).unwrap();
        assert!(walk(&c).first_bad.is_some());
    }
}
