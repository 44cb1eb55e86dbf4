//! The four trackers' REST protocols: what FlowGuard sends and what counts as success.
//! Transport is [`crate::net::tracker`]; a call succeeds only when the tracker answers 2xx with
//! the documented JSON carrying an id/key (and, for a created ticket, a URL). A redirect, an HTML
//! page, an empty body, non-JSON or another shape is a [`Failure`] with a clear reason.
//!
//! - **Jira** Server/Data Center and Cloud, REST API v2 (<https://docs.atlassian.com/software/jira/docs/api/REST/latest/>):
//!   `POST /rest/api/2/issue` (`fields.project.key`, `summary`, `description`,
//!   `issuetype.name` default `Bug`, `labels`, plus the integration's `fields` merged over them)
//!   → 201 `{id, key, self}`; `POST /rest/api/2/issue/{key}/attachments` (multipart `file`,
//!   header `X-Atlassian-Token: no-check`) → 200 `[…]`; `POST /rest/api/2/issue/{key}/comment`
//!   `{body}` → 201 `{id}`. Auth `Authorization: Bearer <PAT>`, or with `email` Basic
//!   `email:token` (Cloud API tokens). Checks: `GET /rest/api/2/myself`,
//!   `GET /rest/api/2/project/{key}` (its `issueTypes`).
//! - **GitHub** / GitHub Enterprise Server (<https://docs.github.com/en/rest/issues>): API root
//!   `https://api.github.com` as is, else `<base_url>/api/v3`; `POST /repos/{owner}/{repo}/issues`
//!   `{title, body, labels}` → 201 `{id, number, html_url}`; comments
//!   `POST /repos/{owner}/{repo}/issues/{number}/comments` → 201 `{id}`. Bearer token,
//!   `Accept: application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28`. No attachment
//!   API: the body links the run page. Checks: `GET /user`, `GET /repos/{owner}/{repo}`
//!   (`has_issues`).
//! - **GitLab** (<https://docs.gitlab.com/ee/api/issues.html>): `/api/v4/projects/{id or
//!   url-encoded path}`; `POST …/uploads` (multipart `file`) → 201 `{markdown}` embedded in the
//!   description; `POST …/issues` `{title, description, labels}` → 201 `{id, iid, web_url}`;
//!   `POST …/issues/{iid}/notes` `{body}` → 201 `{id}`. Header `PRIVATE-TOKEN`. Checks:
//!   `GET /api/v4/user`, `GET /api/v4/projects/{id}` (`issues_enabled`).
//! - **Azure DevOps** Server and Services (<https://learn.microsoft.com/en-us/rest/api/azure/devops/wit/>),
//!   `base_url` = collection URL: `POST {collection}/{project}/_apis/wit/attachments?fileName=…&api-version=7.0`
//!   (`application/octet-stream`) → 201 `{id, url}`; `POST {collection}/{project}/_apis/wit/workitems/$Bug?api-version=7.0`
//!   with a JSON Patch document (`application/json-patch+json`: `System.Title`,
//!   `Microsoft.VSTS.TCM.ReproSteps`, `System.Tags`, every `fields` entry such as
//!   `System.AreaPath`/`System.IterationPath`, and an `AttachedFile` relation) → 200
//!   `{id, _links.html.href}`; comments `POST …/workItems/{id}/comments?api-version=7.0-preview.3`
//!   `{text}` → 200 `{id}`. PAT as Basic with an empty user. Project names are percent-encoded
//!   (a space is `%20`). Checks: `GET {collection}/_apis/connectionData`,
//!   `GET {collection}/_apis/projects/{project}?api-version=7.0`,
//!   `GET {collection}/{project}/_apis/wit/workitemtypes/Bug?api-version=7.0`.

use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};
use url::Url;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::config::{Integration, Provider};
use crate::net::tracker::{Reply, Request, TrackerClient, TransportError};

/// Why a call did not succeed, and what to do about it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The tracker refused the credentials (401): stop and tell the Owner.
    Auth(String),
    /// Worth retrying (429, 5xx, timeout, connection): after `Retry-After` when given.
    Retry(String, Option<u64>),
    /// Not worth retrying (redirect, HTML, wrong shape, 403/404/4xx, TLS, egress).
    Permanent(String),
}

impl Failure {
    /// The human reason.
    pub fn reason(&self) -> &str {
        match self {
            Failure::Auth(m) | Failure::Retry(m, _) | Failure::Permanent(m) => m,
        }
    }
}

/// A ticket the tracker created: its id, display key and browser URL.
#[derive(Debug, Clone)]
pub struct Created {
    /// Tracker id (Jira id, issue number / iid, work item id).
    pub remote_id: String,
    /// Display key (`ED-24`, `#12`, `42`).
    pub key: String,
    /// Browser URL.
    pub url: String,
    /// A note when the screenshot could not be attached (the ticket is filed nonetheless).
    pub note: Option<String>,
}

/// One check of `POST …/integration/test`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// `reachability`, `authentication`, `project`, `issue_type`.
    pub name: &'static str,
    /// Passed.
    pub ok: bool,
    /// What was found (never the token).
    pub detail: String,
}

fn transport(e: TransportError) -> Failure {
    match e {
        TransportError::Timeout(_) | TransportError::Connect(_) => {
            Failure::Retry(e.to_string(), None)
        }
        TransportError::Tls(..) | TransportError::Egress(_) => Failure::Permanent(e.to_string()),
    }
}

fn tracker_message(v: &Value) -> Option<String> {
    let s = v["errorMessages"][0]
        .as_str()
        .or_else(|| v["message"].as_str())
        .or_else(|| v["error"].as_str())
        .map(str::to_string)
        .or_else(|| {
            v["errors"]
                .as_object()
                .and_then(|o| o.iter().next())
                .map(|(k, e)| format!("{k}: {}", e.as_str().unwrap_or("invalid")))
        })?;
    Some(s.chars().take(300).collect())
}

/// The JSON of a 2xx reply, or the failure it stands for.
pub fn expect_json(r: &Reply, what: &str) -> Result<Value, Failure> {
    let parsed: Option<Value> = serde_json::from_slice(&r.body).ok();
    let msg = parsed
        .as_ref()
        .and_then(tracker_message)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match r.status {
        300..=399 => {
            return Err(Failure::Permanent(format!(
                "{what}: the tracker answered HTTP {} (a redirect); redirects are not followed — check base_url",
                r.status
            )))
        }
        401 => {
            return Err(Failure::Auth(format!(
                "{what}: the tracker refused the token (HTTP 401{msg}); it may be expired or revoked"
            )))
        }
        429 => {
            return Err(Failure::Retry(
                format!("{what}: rate limited by the tracker (HTTP 429)"),
                r.retry_after,
            ))
        }
        500..=599 => {
            return Err(Failure::Retry(
                format!("{what}: the tracker answered HTTP {}", r.status),
                r.retry_after,
            ))
        }
        403 => {
            return Err(Failure::Permanent(format!(
                "{what}: the token lacks permission (HTTP 403{msg})"
            )))
        }
        404 => {
            return Err(Failure::Permanent(format!(
                "{what}: not found (HTTP 404{msg}) — check the project"
            )))
        }
        200..=299 => {}
        s => {
            return Err(Failure::Permanent(format!(
                "{what}: the tracker refused the request (HTTP {s}{msg})"
            )))
        }
    }
    if r.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Failure::Permanent(format!(
            "{what}: the tracker answered HTTP {} with an empty body",
            r.status
        )));
    }
    let html = r
        .content_type
        .as_deref()
        .is_some_and(|c| c.to_ascii_lowercase().contains("html"))
        || r.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    if html {
        return Err(Failure::Permanent(format!(
            "{what}: the tracker answered with an HTML page, not the API's JSON (a login page or proxy?)"
        )));
    }
    parsed.ok_or_else(|| Failure::Permanent(format!("{what}: the reply is not JSON")))
}

fn shape(what: &str, missing: &str) -> Failure {
    Failure::Permanent(format!("{what}: unexpected reply shape (no `{missing}`)"))
}

/// `s` percent-encoded as one path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

const BOUNDARY: &str = "flowguard-attachment-3f1c9e7b2a";

fn multipart_png(filename: &str, png: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(png);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Plain text as the HTML Azure DevOps shows in `ReproSteps` and comments.
pub fn to_html(s: &str) -> String {
    format!("<div>{}</div>", html_escape(s).replace('\n', "<br/>"))
}

/// One tracker: the integration and a client bound to its host.
pub struct Tracker<'a> {
    /// The integration (token decrypted).
    pub cfg: &'a Integration,
    /// Transport.
    pub client: &'a TrackerClient,
}

type Hdrs = Vec<(&'static str, Zeroizing<String>, bool)>;

fn h(name: &'static str, v: &str) -> (&'static str, Zeroizing<String>, bool) {
    (name, Zeroizing::new(v.to_string()), false)
}

impl Tracker<'_> {
    fn base(&self) -> String {
        self.cfg.base_url.as_str().trim_end_matches('/').to_string()
    }

    /// API root of the provider.
    pub fn api_root(&self) -> String {
        let b = self.base();
        match self.cfg.provider {
            Provider::Github => {
                if self.cfg.base_url.host_str() == Some("api.github.com") || b.ends_with("/api/v3")
                {
                    b
                } else {
                    format!("{b}/api/v3")
                }
            }
            Provider::Gitlab => format!("{b}/api/v4"),
            Provider::Jira | Provider::AzureDevops => b,
        }
    }

    fn auth(&self) -> Hdrs {
        let token = self.cfg.token.as_str();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let secret = |name: &'static str, v: String| (name, Zeroizing::new(v), true);
        match self.cfg.provider {
            Provider::Jira => match &self.cfg.email {
                Some(e) => vec![secret(
                    "authorization",
                    format!("Basic {}", b64(&format!("{e}:{token}"))),
                )],
                None => vec![secret("authorization", format!("Bearer {token}"))],
            },
            Provider::Github => vec![
                secret("authorization", format!("Bearer {token}")),
                h("accept", "application/vnd.github+json"),
                h("x-github-api-version", "2022-11-28"),
            ],
            Provider::Gitlab => vec![secret("private-token", token.to_string())],
            Provider::AzureDevops => vec![secret(
                "authorization",
                format!("Basic {}", b64(&format!(":{token}"))),
            )],
        }
    }

    fn url(&self, s: &str) -> Result<Url, Failure> {
        Url::parse(s).map_err(|_| Failure::Permanent(format!("cannot build the URL {s}")))
    }

    async fn call(
        &self,
        method: &'static str,
        url: &str,
        extra: Hdrs,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Value, Failure> {
        let mut headers = self.auth();
        if !headers.iter().any(|(n, _, _)| *n == "accept") {
            headers.push(h("accept", "application/json"));
        }
        headers.extend(extra);
        let r = self
            .client
            .send(Request {
                method,
                url: self.url(url)?,
                headers,
                body,
            })
            .await
            .map_err(transport)?;
        expect_json(&r, what)
    }

    async fn post_json(&self, url: &str, body: &Value, what: &str) -> Result<Value, Failure> {
        self.call(
            "POST",
            url,
            vec![h("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
            what,
        )
        .await
    }

    fn gitlab_project(&self) -> String {
        format!(
            "{}/projects/{}",
            self.api_root(),
            encode_segment(&self.cfg.project)
        )
    }

    fn ado_project(&self) -> String {
        format!("{}/{}", self.base(), encode_segment(&self.cfg.project))
    }

    fn github_repo(&self) -> String {
        let (o, r) = self.cfg.project.split_once('/').unwrap_or(("", ""));
        format!(
            "{}/repos/{}/{}",
            self.api_root(),
            encode_segment(o),
            encode_segment(r)
        )
    }

    fn jira_issue_type(&self) -> String {
        self.cfg
            .fields
            .get("issuetype")
            .and_then(|v| v["name"].as_str())
            .unwrap_or("Bug")
            .to_string()
    }

    /// File a ticket: `title`, `body` (plain text), the masked screenshot `png` attached where
    /// the tracker takes attachments (its file name `filename`).
    pub async fn create(
        &self,
        title: &str,
        body: &str,
        png: Option<(&str, &[u8])>,
    ) -> Result<Created, Failure> {
        match self.cfg.provider {
            Provider::Jira => self.jira_create(title, body, png).await,
            Provider::Github => self.github_create(title, body).await,
            Provider::Gitlab => self.gitlab_create(title, body, png).await,
            Provider::AzureDevops => self.ado_create(title, body, png).await,
        }
    }

    async fn jira_create(
        &self,
        title: &str,
        body: &str,
        png: Option<(&str, &[u8])>,
    ) -> Result<Created, Failure> {
        let mut fields = Map::new();
        fields.insert("project".into(), json!({"key": self.cfg.project}));
        fields.insert("summary".into(), json!(title));
        fields.insert("description".into(), json!(body));
        fields.insert("issuetype".into(), json!({"name": "Bug"}));
        if !self.cfg.labels.is_empty() {
            fields.insert("labels".into(), json!(self.cfg.labels));
        }
        for (k, v) in &self.cfg.fields {
            fields.insert(k.clone(), v.clone());
        }
        let what = "create the Jira issue";
        let v = self
            .post_json(
                &format!("{}/rest/api/2/issue", self.base()),
                &json!({ "fields": fields }),
                what,
            )
            .await?;
        let id = id_string(&v["id"]).ok_or_else(|| shape(what, "id"))?;
        let key = v["key"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| shape(what, "key"))?
            .to_string();
        if v["self"].as_str().is_none() {
            return Err(shape(what, "self"));
        }
        let url = format!("{}/browse/{}", self.base(), encode_segment(&key));
        let mut note = None;
        if let Some((name, png)) = png {
            let what = "attach the screenshot";
            let r = self
                .call(
                    "POST",
                    &format!(
                        "{}/rest/api/2/issue/{}/attachments",
                        self.base(),
                        encode_segment(&key)
                    ),
                    vec![
                        h("x-atlassian-token", "no-check"),
                        h(
                            "content-type",
                            &format!("multipart/form-data; boundary={BOUNDARY}"),
                        ),
                    ],
                    Some(multipart_png(name, png)),
                    what,
                )
                .await;
            match r {
                Ok(Value::Array(a)) if !a.is_empty() => {}
                Ok(_) => note = Some(shape(what, "[attachment]").reason().to_string()),
                Err(f) => note = Some(f.reason().to_string()),
            }
        }
        Ok(Created {
            remote_id: id,
            key,
            url,
            note,
        })
    }

    async fn github_create(&self, title: &str, body: &str) -> Result<Created, Failure> {
        let what = "create the GitHub issue";
        let mut b = json!({"title": title, "body": body});
        if !self.cfg.labels.is_empty() {
            b["labels"] = json!(self.cfg.labels);
        }
        for (k, v) in &self.cfg.fields {
            b[k] = v.clone();
        }
        let v = self
            .post_json(&format!("{}/issues", self.github_repo()), &b, what)
            .await?;
        if id_string(&v["id"]).is_none() {
            return Err(shape(what, "id"));
        }
        let n = v["number"].as_u64().ok_or_else(|| shape(what, "number"))?;
        let url = v["html_url"]
            .as_str()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| shape(what, "html_url"))?;
        Ok(Created {
            remote_id: n.to_string(),
            key: format!("#{n}"),
            url: url.to_string(),
            note: None,
        })
    }

    async fn gitlab_create(
        &self,
        title: &str,
        body: &str,
        png: Option<(&str, &[u8])>,
    ) -> Result<Created, Failure> {
        let mut description = body.to_string();
        let mut note = None;
        if let Some((name, png)) = png {
            let what = "upload the screenshot";
            let r = self
                .call(
                    "POST",
                    &format!("{}/uploads", self.gitlab_project()),
                    vec![h(
                        "content-type",
                        &format!("multipart/form-data; boundary={BOUNDARY}"),
                    )],
                    Some(multipart_png(name, png)),
                    what,
                )
                .await;
            match r {
                Ok(v) => match v["markdown"].as_str() {
                    Some(md) => {
                        description.push_str(&format!("\n\nScreenshot (masked):\n\n{md}\n"))
                    }
                    None => note = Some(shape(what, "markdown").reason().to_string()),
                },
                // A refused upload for a reason that also refuses the issue stops here.
                Err(f @ (Failure::Auth(_) | Failure::Retry(..))) => return Err(f),
                Err(f) => note = Some(f.reason().to_string()),
            }
        }
        let what = "create the GitLab issue";
        let mut b = json!({"title": title, "description": description});
        if !self.cfg.labels.is_empty() {
            b["labels"] = json!(self.cfg.labels.join(","));
        }
        for (k, v) in &self.cfg.fields {
            b[k] = v.clone();
        }
        let v = self
            .post_json(&format!("{}/issues", self.gitlab_project()), &b, what)
            .await?;
        if id_string(&v["id"]).is_none() {
            return Err(shape(what, "id"));
        }
        let iid = v["iid"].as_u64().ok_or_else(|| shape(what, "iid"))?;
        let url = v["web_url"]
            .as_str()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| shape(what, "web_url"))?;
        Ok(Created {
            remote_id: iid.to_string(),
            key: format!("#{iid}"),
            url: url.to_string(),
            note,
        })
    }

    async fn ado_create(
        &self,
        title: &str,
        body: &str,
        png: Option<(&str, &[u8])>,
    ) -> Result<Created, Failure> {
        let mut note = None;
        let mut attachment = None;
        if let Some((name, png)) = png {
            let what = "upload the screenshot";
            let r = self
                .call(
                    "POST",
                    &format!(
                        "{}/_apis/wit/attachments?fileName={}&api-version=7.0",
                        self.ado_project(),
                        encode_segment(name)
                    ),
                    vec![h("content-type", "application/octet-stream")],
                    Some(png.to_vec()),
                    what,
                )
                .await;
            match r {
                Ok(v) => match v["url"].as_str() {
                    Some(u) => attachment = Some(u.to_string()),
                    None => note = Some(shape(what, "url").reason().to_string()),
                },
                Err(f @ (Failure::Auth(_) | Failure::Retry(..))) => return Err(f),
                Err(f) => note = Some(f.reason().to_string()),
            }
        }
        let mut ops = vec![
            json!({"op": "add", "path": "/fields/System.Title", "value": title}),
            json!({"op": "add", "path": "/fields/Microsoft.VSTS.TCM.ReproSteps", "value": to_html(body)}),
        ];
        if !self.cfg.labels.is_empty() {
            ops.push(json!({"op": "add", "path": "/fields/System.Tags", "value": self.cfg.labels.join("; ")}));
        }
        for (k, v) in &self.cfg.fields {
            ops.push(json!({"op": "add", "path": format!("/fields/{k}"), "value": v}));
        }
        if let Some(u) = &attachment {
            ops.push(json!({"op": "add", "path": "/relations/-", "value": {
                "rel": "AttachedFile", "url": u, "attributes": {"comment": "Masked screenshot of the failing step"}}}));
        }
        let what = "create the Azure DevOps work item";
        let v = self
            .call(
                "POST",
                &format!(
                    "{}/_apis/wit/workitems/$Bug?api-version=7.0",
                    self.ado_project()
                ),
                vec![h("content-type", "application/json-patch+json")],
                Some(Value::Array(ops).to_string().into_bytes()),
                what,
            )
            .await?;
        let id = v["id"].as_u64().ok_or_else(|| shape(what, "id"))?;
        let url = v["_links"]["html"]["href"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/_workitems/edit/{id}", self.ado_project()));
        if v["url"].as_str().is_none() && v["_links"]["html"]["href"].as_str().is_none() {
            return Err(shape(what, "url"));
        }
        Ok(Created {
            remote_id: id.to_string(),
            key: id.to_string(),
            url,
            note,
        })
    }

    /// Comment `text` on the ticket with tracker id `remote_id` (display key `key`).
    pub async fn comment(&self, remote_id: &str, key: &str, text: &str) -> Result<(), Failure> {
        let what = "add the comment";
        let v = match self.cfg.provider {
            Provider::Jira => {
                self.post_json(
                    &format!(
                        "{}/rest/api/2/issue/{}/comment",
                        self.base(),
                        encode_segment(key)
                    ),
                    &json!({"body": text}),
                    what,
                )
                .await?
            }
            Provider::Github => {
                self.post_json(
                    &format!(
                        "{}/issues/{}/comments",
                        self.github_repo(),
                        encode_segment(remote_id)
                    ),
                    &json!({"body": text}),
                    what,
                )
                .await?
            }
            Provider::Gitlab => {
                self.post_json(
                    &format!(
                        "{}/issues/{}/notes",
                        self.gitlab_project(),
                        encode_segment(remote_id)
                    ),
                    &json!({"body": text}),
                    what,
                )
                .await?
            }
            Provider::AzureDevops => {
                self.post_json(
                    &format!(
                        "{}/_apis/wit/workItems/{}/comments?api-version=7.0-preview.3",
                        self.ado_project(),
                        encode_segment(remote_id)
                    ),
                    &json!({"text": to_html(text)}),
                    what,
                )
                .await?
            }
        };
        id_string(&v["id"])
            .map(|_| ())
            .ok_or_else(|| shape(what, "id"))
    }

    /// Reachability, authentication, project and issue type, creating nothing.
    pub async fn checks(&self) -> Vec<Check> {
        let (auth_url, project_url, type_url) = match self.cfg.provider {
            Provider::Jira => (
                format!("{}/rest/api/2/myself", self.base()),
                format!(
                    "{}/rest/api/2/project/{}",
                    self.base(),
                    encode_segment(&self.cfg.project)
                ),
                None,
            ),
            Provider::Github => (
                format!("{}/user", self.api_root()),
                self.github_repo(),
                None,
            ),
            Provider::Gitlab => (
                format!("{}/user", self.api_root()),
                self.gitlab_project(),
                None,
            ),
            Provider::AzureDevops => (
                format!("{}/_apis/connectionData", self.base()),
                format!(
                    "{}/_apis/projects/{}?api-version=7.0",
                    self.base(),
                    encode_segment(&self.cfg.project)
                ),
                Some(format!(
                    "{}/_apis/wit/workitemtypes/Bug?api-version=7.0",
                    self.ado_project()
                )),
            ),
        };
        let mut out = Vec::new();
        let check = |name, ok, detail: String| Check { name, ok, detail };
        let skipped = |name| check(name, false, "not checked (an earlier check failed)".into());
        // Reachability and authentication from the same call.
        let auth = self
            .call("GET", &auth_url, vec![], None, "authenticate")
            .await;
        match &auth {
            Err(Failure::Retry(m, _) | Failure::Permanent(m))
                if !m.starts_with("authenticate: ") =>
            {
                out.push(check("reachability", false, m.clone()));
                out.extend(["authentication", "project", "issue_type"].map(skipped));
                return out;
            }
            _ => out.push(check(
                "reachability",
                true,
                format!("{} answered over TLS", self.api_root()),
            )),
        }
        match auth {
            Ok(v) => {
                let who = v["name"]
                    .as_str()
                    .or(v["login"].as_str())
                    .or(v["username"].as_str())
                    .or(v["displayName"].as_str())
                    .or(v["authenticatedUser"]["providerDisplayName"].as_str())
                    .or(v["accountId"].as_str());
                match who {
                    Some(w) => out.push(check(
                        "authentication",
                        true,
                        format!("authenticated as {w}"),
                    )),
                    None => {
                        out.push(check(
                            "authentication",
                            false,
                            shape("authenticate", "user").reason().to_string(),
                        ));
                        out.extend(["project", "issue_type"].map(skipped));
                        return out;
                    }
                }
            }
            Err(f) => {
                out.push(check("authentication", false, f.reason().to_string()));
                out.extend(["project", "issue_type"].map(skipped));
                return out;
            }
        }
        let what = "read the project";
        let project = match self.call("GET", &project_url, vec![], None, what).await {
            Ok(v) => v,
            Err(f) => {
                out.push(check("project", false, f.reason().to_string()));
                out.push(skipped("issue_type"));
                return out;
            }
        };
        let p = &self.cfg.project;
        match self.cfg.provider {
            Provider::Jira => {
                if project["key"].as_str().is_none() {
                    out.push(check(
                        "project",
                        false,
                        shape(what, "key").reason().to_string(),
                    ));
                    out.push(skipped("issue_type"));
                    return out;
                }
                out.push(check("project", true, format!("project {p} found")));
                let want = self.jira_issue_type();
                let types: Vec<&str> = project["issueTypes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
                    .unwrap_or_default();
                let ok = types.iter().any(|t| t.eq_ignore_ascii_case(&want));
                out.push(check(
                    "issue_type",
                    ok,
                    if ok {
                        format!("issue type {want} exists in {p}")
                    } else {
                        format!(
                            "issue type {want} is not among the project's types ({})",
                            types.join(", ")
                        )
                    },
                ));
            }
            Provider::Github | Provider::Gitlab => {
                let (id_field, flag) = if self.cfg.provider == Provider::Github {
                    ("full_name", "has_issues")
                } else {
                    ("id", "issues_enabled")
                };
                if project[id_field].is_null() {
                    out.push(check(
                        "project",
                        false,
                        shape(what, id_field).reason().to_string(),
                    ));
                    out.push(skipped("issue_type"));
                    return out;
                }
                out.push(check("project", true, format!("project {p} found")));
                let ok = project[flag].as_bool() != Some(false);
                out.push(check(
                    "issue_type",
                    ok,
                    if ok {
                        "issues are enabled".to_string()
                    } else {
                        format!("issues are disabled in {p} ({flag}: false)")
                    },
                ));
            }
            Provider::AzureDevops => {
                if project["id"].as_str().is_none() {
                    out.push(check(
                        "project",
                        false,
                        shape(what, "id").reason().to_string(),
                    ));
                    out.push(skipped("issue_type"));
                    return out;
                }
                out.push(check("project", true, format!("project {p} found")));
                let what = "read the work item type";
                let r = match &type_url {
                    Some(u) => self.call("GET", u, vec![], None, what).await,
                    None => Err(Failure::Permanent(what.into())),
                };
                out.push(match r {
                    Ok(v) if v["name"].as_str().is_some() => {
                        check("issue_type", true, "work item type Bug exists".into())
                    }
                    Ok(_) => check(
                        "issue_type",
                        false,
                        shape(what, "name").reason().to_string(),
                    ),
                    Err(f) => check("issue_type", false, f.reason().to_string()),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, ct: &str, body: &str) -> Reply {
        Reply {
            status,
            content_type: Some(ct.into()),
            retry_after: Some(7),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_the_expected_json_counts() {
        assert!(expect_json(&reply(201, "application/json", r#"{"id":"1"}"#), "x").is_ok());
        for (r, want) in [
            (reply(302, "text/html", ""), "redirect"),
            (reply(200, "text/html", "<html>login</html>"), "HTML"),
            (reply(200, "application/json", "<html>"), "HTML"),
            (reply(200, "application/json", ""), "empty"),
            (reply(200, "application/json", "{oops"), "not JSON"),
            (
                reply(
                    404,
                    "application/json",
                    r#"{"errorMessages":["No project"]}"#,
                ),
                "No project",
            ),
        ] {
            let e = expect_json(&r, "x").unwrap_err();
            assert!(matches!(e, Failure::Permanent(_)), "{e:?}");
            assert!(e.reason().contains(want), "{e:?}");
        }
        assert!(matches!(
            expect_json(&reply(401, "application/json", "{}"), "x"),
            Err(Failure::Auth(_))
        ));
        assert!(matches!(
            expect_json(&reply(429, "application/json", "{}"), "x"),
            Err(Failure::Retry(_, Some(7)))
        ));
        assert!(matches!(
            expect_json(&reply(503, "text/plain", "down"), "x"),
            Err(Failure::Retry(..))
        ));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("grp/sub/shop"), "grp%2Fsub%2Fshop");
        assert_eq!(encode_segment("My Project"), "My%20Project");
        assert_eq!(encode_segment("ED"), "ED");
    }
}
