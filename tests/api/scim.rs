//! SCIM 2.0 provisioning (issue 6): every case of `../shared/cases/scim.md` (C01, C02, C04,
//! C05) against the real binary, plus ETags, uniqueness, session revocation, audit, discovery,
//! the error format — and the external conformance checker `scim2` (PyPI `scim2-cli`).

use std::path::PathBuf;
use std::process::Command;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// A SCIM client sending the common headers of the cases file.
struct Scim {
    client: reqwest::Client,
    base: String,
    token: String,
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    /// Assert a SCIM error with `status` (as a JSON string) and `scimType`.
    fn assert_error(&self, status: u16, scim_type: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(
            self.content_type().starts_with("application/scim+json"),
            "error content type: {}",
            self.content_type()
        );
        assert_eq!(self.body["schemas"], json!([ERROR]), "{}", self.body);
        assert_eq!(
            self.body["status"],
            json!(status.to_string()),
            "{}",
            self.body
        );
        match scim_type {
            Some(t) => assert_eq!(self.body["scimType"], t, "{}", self.body),
            None => assert!(self.body.get("scimType").is_none(), "{}", self.body),
        }
        assert!(self.body["detail"].is_string());
    }
}

impl Scim {
    async fn new(app: &TestApp, owner: &Session) -> Scim {
        let t = owner
            .json(
                Method::POST,
                "/api/v1/scim-tokens",
                Some(json!({"name": "entra"})),
                201,
            )
            .await;
        Scim {
            client: app.client(),
            base: app.url("/scim/v2"),
            token: t["token"].as_str().unwrap().to_string(),
        }
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .header("Accept", "application/scim+json");
        if let Some(v) = body {
            b = b
                .header("Content-Type", "application/scim+json; charset=utf-8")
                .body(serde_json::to_vec(&v).unwrap());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = b.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let out = Resp {
            status,
            headers,
            body,
        };
        if !text.is_empty() {
            let ct = out.content_type();
            assert!(
                ct.starts_with("application/scim+json") || ct.starts_with("application/json"),
                "{path}: content type {ct}"
            );
        }
        out
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.send_with(method, path, body, &[]).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> Value {
        let r = self.send(method.clone(), path, body).await;
        assert_eq!(r.status, want, "{method} {path}: {}", r.body);
        r.body
    }

    async fn create(&self, body: Value) -> Value {
        self.ok(Method::POST, "/Users", Some(body), 201).await
    }

    async fn get(&self, id: &str) -> Value {
        self.ok(Method::GET, &format!("/Users/{id}"), None, 200)
            .await
    }

    async fn patch(&self, id: &str, ops: Value) -> Resp {
        self.send(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": ops})),
        )
        .await
    }

    async fn find(&self, user_name: &str) -> Value {
        let l = self
            .ok(
                Method::GET,
                &format!("/Users?filter=userName%20eq%20%22{user_name}%22"),
                None,
                200,
            )
            .await;
        assert_eq!(l["totalResults"], 1, "{l}");
        l["Resources"][0].clone()
    }
}

async fn total(scim: &Scim, q: &str) -> u64 {
    let l = scim
        .ok(Method::GET, &format!("/Users?{q}"), None, 200)
        .await;
    assert_eq!(l["schemas"], json!([LIST]));
    l["totalResults"].as_u64().unwrap()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Audit rows of one action (as the Owner sees them).
async fn audit_rows(owner: &Session, action: &str) -> Vec<Value> {
    let page = owner
        .json(
            Method::GET,
            &format!("/api/v1/audit?action={action}&limit=1000"),
            None,
            200,
        )
        .await;
    page["items"].as_array().unwrap().clone()
}

/// A local member who can log in, so that SCIM deactivation and deletion can be observed on
/// a live session.
async fn member_with_session(app: &TestApp, owner: &Session, email: &str) -> Session {
    let pw = "member-password-123";
    owner
        .json(
            Method::POST,
            "/api/v1/members",
            Some(json!({"email": email, "role": "tester", "password": pw})),
            201,
        )
        .await;
    let s = app.login(Some(&app.tenant_id()), email, pw).await;
    s.json(Method::GET, "/api/v1/me", None, 200).await;
    s
}

async fn login_status(app: &TestApp, email: &str) -> u16 {
    app.client()
        .post(app.url("/api/v1/auth/login"))
        .json(
            &json!({"tenant": app.tenant_id(), "email": email, "password": "member-password-123"}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn scim_c01_entra_patch_dialect() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let member = member_with_session(&app, &owner, "dana@corp.example").await;
    let dana = scim.find("dana@corp.example").await;
    let id = id_of(&dana);
    assert_eq!(dana["active"], true);

    // (c) negative controls first: nothing may change.
    let r = scim
        .patch(
            &id,
            json!([{"op": "REPLACE", "path": "active", "value": "yes"}]),
        )
        .await;
    r.assert_error(400, Some("invalidValue"));
    let r = scim
        .patch(
            &id,
            json!([{"op": "Upsert", "path": "active", "value": "False"}]),
        )
        .await;
    r.assert_error(400, Some("invalidSyntax"));
    // The same class: strings are booleans only for Boolean attributes, and only true/false.
    for bad in [json!("1"), json!(0), json!("False ")] {
        scim.patch(
            &id,
            json!([{"op": "replace", "path": "active", "value": bad}]),
        )
        .await
        .assert_error(400, Some("invalidValue"));
    }
    scim.patch(
        &id,
        json!([{"op": "add", "path": "displayName", "value": true}]),
    )
    .await
    .assert_error(400, Some("invalidValue"));
    let after = scim.get(&id).await;
    assert_eq!(after["active"], true);
    assert_eq!(after["meta"]["version"], dana["meta"]["version"]);
    member.json(Method::GET, "/api/v1/me", None, 200).await;
    assert!(audit_rows(&owner, "user.deactivated").await.is_empty());

    // (a) Entra deactivation: PascalCase op, "False" as a string.
    let r = scim
        .patch(
            &id,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], json!(false));
    let got = scim.get(&id).await;
    assert_eq!(got["active"], json!(false), "a JSON boolean");
    assert_eq!(
        member.get("/api/v1/me").await.status(),
        401,
        "the session ended"
    );
    assert_eq!(login_status(&app, "dana@corp.example").await, 401);
    let rows = audit_rows(&owner, "user.deactivated").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor_email"], "scim-token:entra");
    assert_eq!(rows[0]["actor_role"], "scim");
    // Reactivation with another spelling of the op and value.
    let r = scim
        .patch(
            &id,
            json!([{"op": "rEpLaCe", "path": "ACTIVE", "value": "TRUE"}]),
        )
        .await;
    assert_eq!(r.body["active"], json!(true), "{}", r.body);
    assert_eq!(login_status(&app, "dana@corp.example").await, 200);
    assert_eq!(audit_rows(&owner, "user.reactivated").await.len(), 1);

    // (b) Entra manager assignment as a bare id string.
    let boss = scim
        .create(json!({"schemas": [USER], "userName": "boss@corp.example"}))
        .await;
    let mid = id_of(&boss);
    let r = scim
        .patch(
            &id,
            json!([{"op": "Add", "path": format!("{ENT}:manager"), "value": mid}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = scim.get(&id).await;
    assert_eq!(
        got[ENT]["manager"],
        json!({"value": mid, "$ref": format!("https://{}/scim/v2/Users/{mid}", app.addr)})
    );
    assert!(got["schemas"].as_array().unwrap().contains(&json!(ENT)));
    // The object form and a later change of manager (the old $ref must not survive).
    let r = scim
        .patch(
            &id,
            json!([{"op": "replace", "path": format!("{ENT}:manager"), "value": {"value": "other-id"}}]),
        )
        .await;
    assert_eq!(
        r.body[ENT]["manager"]["$ref"],
        format!("https://{}/scim/v2/Users/other-id", app.addr)
    );
}

#[tokio::test]
async fn scim_c02_pathless_patch() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let u = scim
        .create(json!({"schemas": [USER], "userName": "okta.user@corp.example", "displayName": "Before"}))
        .await;
    let id = id_of(&u);

    // (a) Okta deactivation without a path.
    let r = scim
        .send_with(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]})),
            &[("User-Agent", "Okta SCIM Client 1.0.0")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(scim.get(&id).await["active"], json!(false));

    // (b) Entra dotted and URN-qualified keys in a path-less value; keys ignore case.
    let r = scim
        .patch(
            &id,
            json!([{"op": "Replace", "value": {
                "displayName": "Ada Lovelace",
                "name.givenName": "Ada",
                "NAME.FAMILYNAME": "Lovelace",
                format!("{ENT}:employeeNumber"): "E-1815"
            }}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = scim.get(&id).await;
    assert_eq!(got["displayName"], "Ada Lovelace");
    assert_eq!(
        got["name"],
        json!({"givenName": "Ada", "familyName": "Lovelace"})
    );
    assert_eq!(got[ENT]["employeeNumber"], "E-1815");
    assert!(got["schemas"].as_array().unwrap().contains(&json!(ENT)));
    let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
    assert!(
        keys.iter()
            .all(|k| !k.contains('.') || k.starts_with("urn:")),
        "no literal dotted attribute: {keys:?}"
    );
    // The extension URN itself as a key, with an object.
    let r = scim
        .patch(
            &id,
            json!([{"op": "add", "value": {ENT: {"department": "Analytics"}}}]),
        )
        .await;
    assert_eq!(r.body[ENT]["department"], "Analytics", "{}", r.body);
    assert_eq!(r.body[ENT]["employeeNumber"], "E-1815");

    // (c) remove without a path.
    scim.patch(&id, json!([{"op": "remove"}]))
        .await
        .assert_error(400, Some("noTarget"));

    // Never a 200 that ignored something: unknown keys and paths fail, and the request is
    // atomic — the valid first operation is not applied either.
    let before = scim.get(&id).await;
    for ops in [
        json!([{"op": "replace", "value": {"displayName": "X", "shoeSize": 44}}]),
        json!([{"op": "replace", "path": "displayName", "value": "X"}, {"op": "replace", "path": "nonExistent", "value": 1}]),
        json!([{"op": "replace", "path": "displayName", "value": "X"}, {"op": "replace", "path": "emails[type ne \"home\"].value", "value": "h@x"}]),
        json!([{"op": "replace", "path": "displayName", "value": "X"}, {"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}]),
        json!([{"op": "replace", "value": "not an object"}]),
        json!([]),
    ] {
        let r = scim.patch(&id, ops.clone()).await;
        assert_eq!(r.status, 400, "{ops}: {}", r.body);
        assert_eq!(r.body["schemas"], json!([ERROR]));
    }
    let after = scim.get(&id).await;
    assert_eq!(after, before, "a failed PATCH changes nothing");
    assert_eq!(
        scim.patch(
            &id,
            json!([{"op": "replace", "path": "nonExistent", "value": 1}])
        )
        .await
        .body["scimType"],
        "invalidPath"
    );
    // A value filter that does not describe a value (not only `eq` terms) has no target.
    assert_eq!(
        scim.patch(
            &id,
            json!([{"op": "replace", "path": "emails[type ne \"home\"].value", "value": "h@x"}])
        )
        .await
        .body["scimType"],
        "noTarget"
    );
    assert_eq!(
        scim.patch(&id, json!([{"op": "replace", "path": "id", "value": "x"}]))
            .await
            .body["scimType"],
        "mutability"
    );

    // Value-filter paths: add creates the value the filter describes; replace then updates it.
    let r = scim
        .patch(&id, json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ada@corp.example"}]))
        .await;
    assert_eq!(
        r.body["emails"],
        json!([{"type": "work", "value": "ada@corp.example"}]),
        "{}",
        r.body
    );
    let r = scim
        .patch(&id, json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada@new.example"}]))
        .await;
    assert_eq!(r.body["emails"][0]["value"], "ada@new.example");
    let r = scim
        .patch(
            &id,
            json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
        )
        .await;
    assert!(r.body.get("emails").is_none(), "{}", r.body);

    // Entra ID (issue 24 item 10): `replace` with a value filter for a value the user does not
    // have adds it with the filter's attributes (Entra fails the whole update on `noTarget`),
    // and the other operations of the same request are applied too.
    let r = scim
        .patch(
            &id,
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada@entra.example"},
                {"op": "Replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
                {"op": "Replace", "path": "displayName", "value": "Ada E."}
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = scim.get(&id).await;
    assert_eq!(
        got["emails"],
        json!([{"type": "work", "value": "ada@entra.example"}])
    );
    assert_eq!(
        got["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555 0100"}])
    );
    assert_eq!(got["displayName"], "Ada E.");
    // Sent again it matches the value it created: replaced in place, never a duplicate.
    let r = scim
        .patch(&id, json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada@entra2.example"}]))
        .await;
    assert_eq!(
        r.body["emails"],
        json!([{"type": "work", "value": "ada@entra2.example"}])
    );
}

#[tokio::test]
async fn scim_c04_filters() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let u = scim
        .create(json!({
            "schemas": [USER], "userName": "jane.doe@corp.example", "externalId": "Ext-Id-MixedCase",
            "emails": [{"value": "jane.work@corp.example", "type": "work", "primary": true}],
            "title": "Engineer"
        }))
        .await;
    scim.create(json!({"schemas": [USER], "userName": "other@corp.example", "active": false}))
        .await;
    // Three users in all (with the bootstrap Owner): a fail-open filter would return 3.
    let all = scim.ok(Method::GET, "/Users", None, 200).await;
    assert_eq!(all["totalResults"], 3);

    // 1–3: names, operators and userName values ignore case; '+' is a space; AND works.
    assert_eq!(
        total(
            &scim,
            "filter=UserName%20Eq%20%22JANE.DOE%40CORP.EXAMPLE%22"
        )
        .await,
        1
    );
    assert_eq!(
        total(&scim, "filter=userName+eq+%22jane.doe%40corp.example%22").await,
        1
    );
    assert_eq!(
        total(
            &scim,
            "filter=userName%20eq%20%22jane.doe%40corp.example%22%20AND%20active%20eq%20true"
        )
        .await,
        1
    );
    // 4: emails.value is supported.
    assert_eq!(
        total(
            &scim,
            "filter=emails.value%20eq%20%22jane.work%40corp.example%22"
        )
        .await,
        1
    );
    assert_eq!(
        total(
            &scim,
            "filter=EMAILS.VALUE%20eq%20%22JANE.WORK%40CORP.EXAMPLE%22"
        )
        .await,
        1
    );
    // 5: externalId is caseExact.
    assert_eq!(
        total(&scim, "filter=externalId%20eq%20%22ext-id-mixedcase%22").await,
        0
    );
    assert_eq!(
        total(&scim, "filter=externalId%20eq%20%22Ext-Id-MixedCase%22").await,
        1
    );
    // The rest of the grammar.
    assert_eq!(total(&scim, "filter=userName%20sw%20%22JANE%22").await, 1);
    assert_eq!(
        total(&scim, "filter=userName%20ew%20%22corp.example%22").await,
        2
    );
    assert_eq!(
        total(&scim, "filter=userName%20co%20%22.DOE%40%22").await,
        1
    );
    assert_eq!(
        total(
            &scim,
            "filter=userName%20ne%20%22jane.doe%40corp.example%22"
        )
        .await,
        2
    );
    assert_eq!(total(&scim, "filter=title%20pr").await, 1);
    assert_eq!(total(&scim, "filter=not%20(title%20pr)").await, 2);
    assert_eq!(
        total(
            &scim,
            "filter=active%20eq%20false%20or%20title%20eq%20%22engineer%22"
        )
        .await,
        2
    );
    assert_eq!(
        total(
            &scim,
            "filter=(active%20eq%20false%20or%20title%20pr)%20and%20userName%20sw%20%22o%22"
        )
        .await,
        1
    );
    assert_eq!(
        total(
            &scim,
            "filter=emails%5Btype%20eq%20%22work%22%20and%20value%20co%20%22jane%22%5D"
        )
        .await,
        1
    );
    assert_eq!(
        total(
            &scim,
            "filter=meta.created%20gt%20%222000-01-01T00%3A00%3A00Z%22"
        )
        .await,
        3
    );
    assert_eq!(
        total(
            &scim,
            "filter=meta.lastModified%20lt%20%222000-01-01T00%3A00%3A00Z%22"
        )
        .await,
        0
    );
    assert_eq!(
        total(&scim, &format!("filter=id%20eq%20%22{}%22", id_of(&u))).await,
        1
    );

    // 6–8 and the same class: 400 invalidFilter, never the full list.
    for q in [
        "filter=title%20xx%20%22a%22",
        "filter=userName%20eq%20%22a%22%20and%20(",
        "filter=nonExistentAttr%20eq%20%22a%22",
        "filter=active%20gt%20true",
        "filter=name%20eq%20%22x%22",
        "filter=emails%5Bnope%20eq%20%22x%22%5D",
        "filter=userName%20eq%20true",
        "filter=",
    ] {
        scim.send(Method::GET, &format!("/Users?{q}"), None)
            .await
            .assert_error(400, Some("invalidFilter"));
    }
    // POST /.search takes the same filters.
    let l = scim
        .ok(
            Method::POST,
            "/Users/.search",
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "USERNAME eq \"Jane.Doe@corp.example\"", "attributes": ["userName"]})),
            200,
        )
        .await;
    assert_eq!(l["totalResults"], 1);
    assert!(l["Resources"][0].get("emails").is_none());
    scim.send(
        Method::POST,
        "/.search",
        Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "bogus xx 1"})),
    )
    .await
    .assert_error(400, Some("invalidFilter"));
}

#[tokio::test]
async fn scim_c05_list_response_and_paging() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    // Exactly three users: the bootstrap Owner plus two.
    let u2 = scim
        .create(json!({"schemas": [USER], "userName": "second@corp.example"}))
        .await;
    let u3 = scim
        .create(json!({"schemas": [USER], "userName": "third@corp.example"}))
        .await;

    let r = scim
        .send(
            Method::GET,
            "/Users?filter=userName%20eq%20%22nobody%40corp.example%22",
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("application/scim+json"));
    assert_eq!(
        r.body,
        json!({"schemas": [LIST], "totalResults": 0, "Resources": [], "startIndex": 1, "itemsPerPage": 0})
    );

    let l = scim
        .ok(Method::GET, "/Users?startIndex=1&count=2", None, 200)
        .await;
    assert_eq!(
        (
            l["totalResults"].as_u64(),
            l["startIndex"].as_u64(),
            l["itemsPerPage"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(l["Resources"].as_array().unwrap().len(), 2);
    assert_eq!(l["Resources"][1]["id"], u2["id"], "creation order");

    let l = scim
        .ok(Method::GET, "/Users?startIndex=3&count=2", None, 200)
        .await;
    assert_eq!(
        (
            l["totalResults"].as_u64(),
            l["startIndex"].as_u64(),
            l["itemsPerPage"].as_u64()
        ),
        (Some(3), Some(3), Some(1))
    );
    assert_eq!(l["Resources"][0]["id"], u3["id"], "the third");

    let l = scim
        .ok(Method::GET, "/Users?startIndex=101&count=100", None, 200)
        .await;
    assert_eq!(
        (
            l["totalResults"].as_u64(),
            l["startIndex"].as_u64(),
            l["itemsPerPage"].as_u64()
        ),
        (Some(3), Some(101), Some(0))
    );
    assert_eq!(l["Resources"], json!([]));

    let l = scim
        .ok(Method::GET, "/Users?startIndex=0&count=-5", None, 200)
        .await;
    assert_eq!(
        (
            l["totalResults"].as_u64(),
            l["startIndex"].as_u64(),
            l["itemsPerPage"].as_u64()
        ),
        (Some(3), Some(1), Some(0))
    );
    assert_eq!(l["Resources"], json!([]));

    let l = scim.ok(Method::GET, "/Users?count=0", None, 200).await;
    assert_eq!(l["totalResults"], 3);
    assert_eq!(l["itemsPerPage"], 0);

    // The same data pages the same way every time.
    let again = scim
        .ok(Method::GET, "/Users?startIndex=1&count=2", None, 200)
        .await;
    let first = scim
        .ok(Method::GET, "/Users?startIndex=1&count=2", None, 200)
        .await;
    assert_eq!(again["Resources"], first["Resources"]);

    // Accept: application/json.
    let r = scim
        .send_with(
            Method::GET,
            "/Users",
            None,
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200);
    let ct = r.content_type();
    assert!(
        ct.starts_with("application/json") || ct.starts_with("application/scim+json"),
        "{ct}"
    );
    assert_eq!(r.body["totalResults"], 3);
    // Both request media types are accepted; others are 415.
    let plain = scim
        .client
        .post(format!("{}/Users", scim.base))
        .bearer_auth(&scim.token)
        .json(&json!({"schemas": [USER], "userName": "json@corp.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201);
    let r = scim
        .client
        .post(format!("{}/Users", scim.base))
        .bearer_auth(&scim.token)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Bad paging numbers are 400, not a guess.
    scim.send(Method::GET, "/Users?count=ten", None)
        .await
        .assert_error(400, Some("invalidValue"));
    // The cap shows in ServiceProviderConfig.
    let spc = scim
        .ok(Method::GET, "/ServiceProviderConfig", None, 200)
        .await;
    assert_eq!(
        spc["filter"],
        json!({"supported": true, "maxResults": 1000})
    );
}

#[tokio::test]
async fn scim_create_replace_etags_uniqueness() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let body = json!({
        "schemas": [USER, ENT],
        "userName": "Grace.Hopper@corp.example",
        "externalId": "00u1",
        "name": {"givenName": "Grace", "familyName": "Hopper"},
        "displayName": "Grace Hopper",
        "emails": [{"value": "grace@corp.example", "type": "work", "primary": true}],
        "active": true,
        ENT: {"employeeNumber": "1906", "department": "Navy"}
    });
    let r = scim.send(Method::POST, "/Users", Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let u = r.body.clone();
    let id = id_of(&u);
    let loc = format!("https://{}/scim/v2/Users/{id}", app.addr);
    assert_eq!(r.headers["location"], loc.as_str());
    assert_eq!(u["meta"]["location"], loc);
    assert_eq!(u["meta"]["resourceType"], "User");
    assert_eq!(r.headers["etag"], u["meta"]["version"].as_str().unwrap());
    assert_eq!(
        u["userName"], "Grace.Hopper@corp.example",
        "returned as given"
    );
    assert_eq!(u[ENT]["department"], "Navy");
    assert!(u.get("password").is_none());
    // New users are Viewers.
    let members = owner.json(Method::GET, "/api/v1/members", None, 200).await;
    let m = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(m["role"], "viewer");
    assert_eq!(m["source"], "scim");
    let created = audit_rows(&owner, "user.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor_email"], "scim-token:entra");

    // userName is unique without regard to case.
    let mut dup = body.clone();
    dup["userName"] = json!("grace.hopper@CORP.example");
    scim.send(Method::POST, "/Users", Some(dup))
        .await
        .assert_error(409, Some("uniqueness"));
    scim.send(
        Method::POST,
        "/Users",
        Some(json!({"schemas": [USER], "userName": "x", "password": "secret-pass"})),
    )
    .await
    .assert_error(400, Some("invalidValue"));
    scim.send(Method::POST, "/Users", Some(json!({"schemas": [USER]})))
        .await
        .assert_error(400, Some("invalidValue"));
    scim.send(
        Method::POST,
        "/Users",
        Some(json!({"userName": "no-schemas"})),
    )
    .await
    .assert_error(400, Some("invalidSyntax"));
    let r = scim
        .client
        .post(format!("{}/Users", scim.base))
        .bearer_auth(&scim.token)
        .header("Content-Type", "application/scim+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // GET with If-None-Match → 304.
    let v1 = u["meta"]["version"].as_str().unwrap().to_string();
    let r = scim
        .send_with(
            Method::GET,
            &format!("/Users/{id}"),
            None,
            &[("If-None-Match", &v1)],
        )
        .await;
    assert_eq!(r.status, 304);

    // PUT replaces; a stale If-Match is 412 and changes nothing.
    let mut put = body.clone();
    put["displayName"] = json!("Rear Admiral Hopper");
    put.as_object_mut().unwrap().remove("name");
    put.as_object_mut().unwrap().remove("active");
    let r = scim
        .send_with(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(put.clone()),
            &[("If-Match", "W/\"999\"")],
        )
        .await;
    r.assert_error(412, None);
    assert_eq!(scim.get(&id).await["displayName"], "Grace Hopper");
    let r = scim
        .send_with(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(put.clone()),
            &[("If-Match", &v1)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["displayName"], "Rear Admiral Hopper");
    assert!(r.body.get("name").is_none(), "PUT clears what it omits");
    assert_eq!(r.body["active"], true, "an omitted active keeps its value");
    let v2 = r.body["meta"]["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    assert_eq!(r.headers["etag"], v2.as_str());
    // The same PUT again changes nothing: same version, no new audit row.
    let updates = audit_rows(&owner, "user.updated").await.len();
    let r = scim
        .send(Method::PUT, &format!("/Users/{id}"), Some(put.clone()))
        .await;
    assert_eq!(r.body["meta"]["version"], v2.as_str());
    assert_eq!(audit_rows(&owner, "user.updated").await.len(), updates);
    // PATCH and DELETE honour If-Match too.
    let r = scim
        .send_with(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]})),
            &[("If-Match", &v1)],
        )
        .await;
    r.assert_error(412, None);
    let r = scim
        .send_with(
            Method::DELETE,
            &format!("/Users/{id}"),
            None,
            &[("If-Match", &v1)],
        )
        .await;
    r.assert_error(412, None);
    scim.get(&id).await;
    // PUT onto another user's userName → 409.
    scim.create(json!({"schemas": [USER], "userName": "taken@corp.example"}))
        .await;
    let mut clash = put.clone();
    clash["userName"] = json!("TAKEN@corp.example");
    scim.send(Method::PUT, &format!("/Users/{id}"), Some(clash))
        .await
        .assert_error(409, Some("uniqueness"));
    scim.send(
        Method::PUT,
        "/Users/00000000-0000-4000-8000-000000000000",
        Some(put),
    )
    .await
    .assert_error(404, None);
}

#[tokio::test]
async fn scim_delete_ends_sessions_and_last_owner_stays() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let member = member_with_session(&app, &owner, "leaver@corp.example").await;
    let id = id_of(&scim.find("leaver@corp.example").await);
    let r = scim
        .send(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(member.get("/api/v1/me").await.status(), 401);
    assert_eq!(login_status(&app, "leaver@corp.example").await, 401);
    scim.send(Method::GET, &format!("/Users/{id}"), None)
        .await
        .assert_error(404, None);
    scim.send(Method::DELETE, &format!("/Users/{id}"), None)
        .await
        .assert_error(404, None);
    let rows = audit_rows(&owner, "user.deleted").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["actor_email"], "scim-token:entra");

    // `remove active` leaves it unassigned: the user cannot log in either.
    member_with_session(&app, &owner, "unset@corp.example").await;
    let uid = id_of(&scim.find("unset@corp.example").await);
    let r = scim
        .patch(&uid, json!([{"op": "remove", "path": "active"}]))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("active").is_none());
    assert_eq!(login_status(&app, "unset@corp.example").await, 401);

    // The only Owner can be neither deactivated nor deleted over SCIM.
    let oid = id_of(&scim.find("admin@localhost").await);
    let r = scim
        .patch(
            &oid,
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        scim.send(Method::DELETE, &format!("/Users/{oid}"), None)
            .await
            .status,
        409
    );
    owner.json(Method::GET, "/api/v1/me", None, 200).await;
    assert_eq!(scim.get(&oid).await["active"], true);
}

#[tokio::test]
async fn scim_auth_errors_and_discovery() {
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let anon = app.client();

    // 401 in the SCIM format, with a challenge.
    let r = anon.get(app.url("/scim/v2/Users")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemas"], json!([ERROR]));
    assert_eq!(v["status"], "401");
    // A session cookie is not a SCIM credential: 403.
    let r = owner.get("/scim/v2/Users").await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "403");
    // The SCIM token gets 403 everywhere outside SCIM.
    let bearer = app.bearer(&scim.token);
    for p in [
        "/api/v1/members",
        "/api/v1/me",
        "/api/v1/audit",
        "/api/v1/applications",
    ] {
        assert_eq!(bearer.get(p).await.status(), 403, "{p}");
    }

    // Discovery.
    let spc = scim
        .ok(Method::GET, "/ServiceProviderConfig", None, 200)
        .await;
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let s = scim.ok(Method::GET, "/Schemas", None, 200).await;
    let ids: Vec<&str> = s["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for want in [
        USER,
        ENT,
        "urn:ietf:params:scim:schemas:core:2.0:ResourceType",
        "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig",
        "urn:ietf:params:scim:schemas:core:2.0:Schema",
    ] {
        assert!(ids.contains(&want), "{want} in {ids:?}");
    }
    assert_eq!(s["totalResults"], ids.len());
    let user_schema = scim
        .ok(Method::GET, &format!("/Schemas/{USER}"), None, 200)
        .await;
    let attrs: Vec<&str> = user_schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(attrs.contains(&"userName") && attrs.contains(&"emails"));
    assert!(
        !attrs.contains(&"password"),
        "passwords are not taken over SCIM"
    );
    assert_eq!(
        user_schema["meta"]["location"],
        format!("https://{}/scim/v2/Schemas/{USER}", app.addr)
    );
    scim.send(Method::GET, "/Schemas/urn:nope", None)
        .await
        .assert_error(404, None);
    let rt = scim.ok(Method::GET, "/ResourceTypes", None, 200).await;
    assert_eq!(rt["Resources"][0]["endpoint"], "/Users");
    assert_eq!(rt["Resources"][0]["schemaExtensions"][0]["schema"], ENT);
    scim.ok(Method::GET, "/ResourceTypes/User", None, 200).await;
    scim.send(Method::GET, "/ResourceTypes/Group", None)
        .await
        .assert_error(404, None);
    scim.send(Method::GET, "/Schemas?filter=id%20pr", None)
        .await
        .assert_error(403, None);
    // Unknown endpoints and methods.
    scim.send(Method::GET, "/Groups", None)
        .await
        .assert_error(404, None);
    for (m, p) in [
        (Method::POST, "/ServiceProviderConfig"),
        (Method::DELETE, "/Schemas"),
        (Method::PUT, "/ResourceTypes"),
        (Method::DELETE, "/Users"),
        (Method::POST, "/Users/abc"),
    ] {
        let r = scim.send(m.clone(), p, None).await;
        r.assert_error(405, None);
        assert!(r.headers.contains_key("allow"), "{m} {p}");
    }
    // A revoked token stops working at once.
    let tokens = owner
        .json(Method::GET, "/api/v1/scim-tokens", None, 200)
        .await;
    let tid = tokens["items"][0]["id"].as_str().unwrap();
    owner
        .json(
            Method::DELETE,
            &format!("/api/v1/scim-tokens/{tid}"),
            None,
            204,
        )
        .await;
    scim.send(Method::GET, "/Users", None)
        .await
        .assert_error(401, None);
}

/// The venv `.ci/run` installs `scim2-cli` into (override with `SCIM2_CLI_BIN`).
fn scim2_cli() -> PathBuf {
    std::env::var_os("SCIM2_CLI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/flowguard-venv-scim/bin/scim2"))
}

/// The external checker (`scim2 test` from PyPI `scim2-cli`, i.e. scim2-tester) against the
/// real server over TLS with a real SCIM token: every check passes. A missing tool fails.
#[tokio::test]
async fn scim2_cli_conformance_checker_passes() {
    let cli = scim2_cli();
    assert!(
        cli.is_file(),
        "{} is missing: run .ci/run (it installs PyPI scim2-cli into a venv)",
        cli.display()
    );
    let app = spawn_app().await;
    let owner = app.owner().await;
    let scim = Scim::new(&app, &owner).await;
    let cert = app.data.join("tls/cert.pem");
    let url = app.url("/scim/v2");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(cli)
            .arg("--url")
            .arg(&url)
            .arg("test")
            .env(
                "SCIM_CLI_HEADERS",
                format!("Authorization: Bearer {}", scim.token),
            )
            .env("SSL_CERT_FILE", &cert)
            .env("NO_COLOR", "1")
            .output()
            .expect("run scim2")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let passed = text.lines().filter(|l| l.starts_with("SUCCESS")).count();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ERROR") || l.starts_with("CRITICAL"))
        .collect();
    let skipped = text.lines().filter(|l| l.starts_with("SKIPPED")).count();
    eprintln!(
        "scim2-cli: {passed} passed, {} failed, {skipped} skipped",
        failed.len()
    );
    assert!(
        out.status.success() && failed.is_empty(),
        "scim2 test failed ({:?}):\n{text}\n{err}",
        out.status
    );
    assert!(
        passed >= 100,
        "too few checks ran ({passed}):\n{text}\n{err}"
    );
    assert_eq!(skipped, 0, "skipped checks:\n{text}");
}
