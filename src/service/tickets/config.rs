//! An application's ticket integration: the API body, its validation and the stored shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};

/// A tracker kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Jira Server/Data Center or Cloud.
    Jira,
    /// GitHub or GitHub Enterprise Server.
    Github,
    /// GitLab (self-managed or gitlab.com).
    Gitlab,
    /// Azure DevOps Server or Services.
    AzureDevops,
}

impl Provider {
    /// Stable name (`jira`, `github`, `gitlab`, `azure-devops`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Jira => "jira",
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::AzureDevops => "azure-devops",
        }
    }
    /// Parse a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jira" => Some(Provider::Jira),
            "github" => Some(Provider::Github),
            "gitlab" => Some(Provider::Gitlab),
            "azure-devops" => Some(Provider::AzureDevops),
            _ => None,
        }
    }
}

/// When tickets are filed automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// File a ticket when a run fails (default false: manual filing only).
    #[serde(default)]
    pub file_on_failure: bool,
    /// File only after this many consecutive failures of the flow (1–100, default 1).
    #[serde(default = "one")]
    pub after_consecutive_failures: u32,
    /// A repeat of an open ticket's failure adds a comment (at most one per hour per ticket).
    #[serde(default)]
    pub comment_on_repeat: bool,
    /// A later pass of the flow comments the recovery on its open tickets.
    #[serde(default)]
    pub comment_on_recovery: bool,
}

fn one() -> u32 {
    1
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            file_on_failure: false,
            after_consecutive_failures: 1,
            comment_on_repeat: false,
            comment_on_recovery: false,
        }
    }
}

/// Credentials (write-only).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthBody {
    /// PAT / API token (stored sealed, never returned).
    #[schema(value_type = String)]
    pub token: Zeroizing<String>,
    /// Jira Cloud: the account e-mail (Basic `email:token`); omit for a Bearer PAT.
    #[serde(default)]
    pub email: Option<String>,
}

/// `PUT /api/v1/applications/{app}/integration` body (full replacement).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationBody {
    /// `jira`, `github`, `gitlab` or `azure-devops`.
    pub provider: String,
    /// `https://` URL: Jira base, GitHub(ES) web or API URL, GitLab base, Azure DevOps
    /// collection URL.
    pub base_url: String,
    /// Jira project key, GitHub `owner/repo`, GitLab project id or path, Azure DevOps project.
    pub project: String,
    /// Credentials.
    pub auth: AuthBody,
    /// PEM CA bundle that replaces the public roots for this tracker.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// When the token expires (RFC 3339); 14 days before, Owners are warned.
    #[serde(default)]
    pub token_expires_at: Option<String>,
    /// Labels (tags) set on every ticket.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Extra fields merged into the created ticket (Jira custom fields, Azure DevOps
    /// `System.AreaPath`/`System.IterationPath`, GitHub/GitLab issue attributes).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Map<String, Value>>,
    /// Filing rules.
    #[serde(default)]
    pub rules: Option<Rules>,
}

/// A validated integration (token decrypted). `Debug` never shows the token.
#[derive(Clone)]
pub struct Integration {
    /// Tracker kind.
    pub provider: Provider,
    /// Base URL (https, no credentials/query/fragment, no trailing slash).
    pub base_url: Url,
    /// Project.
    pub project: String,
    /// Jira Cloud e-mail.
    pub email: Option<String>,
    /// Token.
    pub token: Zeroizing<String>,
    /// CA bundle.
    pub ca_pem: Option<String>,
    /// Token expiry (RFC 3339, normalised to UTC).
    pub token_expires_at: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Extra fields.
    pub fields: Map<String, Value>,
    /// Rules.
    pub rules: Rules,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url.as_str())
            .field("project", &self.project)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// Raw stored/received fields before validation.
pub struct Raw<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Base URL.
    pub base_url: &'a str,
    /// Project.
    pub project: &'a str,
    /// E-mail.
    pub email: Option<&'a str>,
    /// Token.
    pub token: &'a str,
    /// CA bundle.
    pub ca_pem: Option<&'a str>,
    /// Expiry.
    pub token_expires_at: Option<&'a str>,
    /// Labels.
    pub labels: Vec<String>,
    /// Fields.
    pub fields: Map<String, Value>,
    /// Rules.
    pub rules: Rules,
}

impl Integration {
    /// Validate: known `provider`; `base_url` an `https://` URL with a host and no credentials,
    /// query or fragment (≤ 2048 chars); `project` 1–200 characters without control characters
    /// (GitHub: `owner/repo`); `auth.token` 1–4096 visible ASCII characters; `auth.email` only
    /// for Jira, an address with `@`; `ca_pem` ≤ 1 MiB of PEM certificates;
    /// `token_expires_at` RFC 3339; ≤ 20 labels of 1–100 characters without commas or `;`;
    /// ≤ 50 `fields`; `rules.after_consecutive_failures` 1–100. Errors name the field.
    pub fn parse(r: Raw<'_>) -> ApiResult<Self> {
        let provider = Provider::parse(r.provider).ok_or_else(|| {
            ApiError::invalid(
                "provider",
                "provider must be jira, github, gitlab or azure-devops",
            )
        })?;
        let bad_url = || {
            ApiError::invalid(
                "base_url",
                "base_url must be an https:// URL with a host and no credentials, query or fragment",
            )
        };
        let raw = r.base_url.trim();
        if raw.len() > 2048 {
            return Err(bad_url());
        }
        let mut url = Url::parse(raw).map_err(|_| bad_url())?;
        if url.scheme() != "https"
            || url.host_str().is_none_or(str::is_empty)
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad_url());
        }
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        let project = r.project.trim();
        if project.is_empty()
            || project.chars().count() > 200
            || project.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "project",
                "project must be 1-200 characters without control characters",
            ));
        }
        if provider == Provider::Github {
            let ok = project
                .split_once('/')
                .is_some_and(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'));
            if !ok {
                return Err(ApiError::invalid(
                    "project",
                    "a GitHub project is owner/repo",
                ));
            }
        }
        let t = r.token;
        if t.is_empty() || t.len() > 4096 || !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ApiError::invalid(
                "auth.token",
                "auth.token must be 1-4096 visible ASCII characters",
            ));
        }
        let email = match r.email.map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(e) => {
                if provider != Provider::Jira {
                    return Err(ApiError::invalid(
                        "auth.email",
                        "auth.email is only used by Jira Cloud (email + API token)",
                    ));
                }
                if !e.contains('@')
                    || e.len() > 320
                    || e.chars().any(|c| c.is_control() || c == ':')
                {
                    return Err(ApiError::invalid(
                        "auth.email",
                        "auth.email must be an e-mail address",
                    ));
                }
                Some(e.to_string())
            }
        };
        let ca_pem = match r.ca_pem.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(p) => {
                if p.len() > 1024 * 1024 {
                    return Err(ApiError::invalid("ca_pem", "ca_pem is larger than 1 MiB"));
                }
                crate::net::tls::check_ca_pem(p).map_err(|m| ApiError::invalid("ca_pem", m))?;
                Some(p.to_string())
            }
        };
        let token_expires_at = match r.token_expires_at.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| {
                        ApiError::invalid("token_expires_at", "token_expires_at must be RFC 3339")
                    })?
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        };
        if r.labels.len() > 20
            || r.labels.iter().any(|l| {
                let l = l.trim();
                l.is_empty()
                    || l.chars().count() > 100
                    || l.contains([',', ';'])
                    || l.chars().any(char::is_control)
            })
        {
            return Err(ApiError::invalid(
                "labels",
                "at most 20 labels of 1-100 characters without commas, semicolons or control characters",
            ));
        }
        if r.fields.len() > 50 || r.fields.keys().any(|k| k.is_empty() || k.len() > 200) {
            return Err(ApiError::invalid(
                "fields",
                "at most 50 fields with names of 1-200 characters",
            ));
        }
        if !(1..=100).contains(&r.rules.after_consecutive_failures) {
            return Err(ApiError::invalid(
                "rules.after_consecutive_failures",
                "rules.after_consecutive_failures must be 1-100",
            ));
        }
        Ok(Self {
            provider,
            base_url: url,
            project: project.to_string(),
            email,
            token: Zeroizing::new(t.to_string()),
            ca_pem,
            token_expires_at,
            labels: r.labels.iter().map(|l| l.trim().to_string()).collect(),
            fields: r.fields,
            rules: r.rules,
        })
    }

    /// Host (IPv6 without brackets) and port (default 443).
    pub fn host_port(&self) -> (String, u16) {
        let host = self
            .base_url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        (host, self.base_url.port_or_known_default().unwrap_or(443))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(provider: &'static str, url: &'static str, project: &'static str) -> Raw<'static> {
        Raw {
            provider,
            base_url: url,
            project,
            email: None,
            token: "tok",
            ca_pem: None,
            token_expires_at: None,
            labels: vec![],
            fields: Map::new(),
            rules: Rules::default(),
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(Integration::parse(raw("jira", "https://jira.corp/", "ED")).is_ok());
        for (r, field) in [
            (raw("bugzilla", "https://a", "x"), "provider"),
            (raw("jira", "http://jira.corp", "ED"), "base_url"),
            (raw("jira", "https://u:p@jira.corp", "ED"), "base_url"),
            (
                raw("github", "https://github.corp", "just-a-repo"),
                "project",
            ),
            (raw("jira", "https://jira.corp", ""), "project"),
        ] {
            assert_eq!(
                Integration::parse(r).unwrap_err().field.as_deref(),
                Some(field)
            );
        }
        let mut r = raw("gitlab", "https://gl.corp", "g/p");
        r.email = Some("a@b.c");
        assert_eq!(
            Integration::parse(r).unwrap_err().field.as_deref(),
            Some("auth.email")
        );
        let mut r = raw("jira", "https://jira.corp", "ED");
        r.rules.after_consecutive_failures = 0;
        assert!(Integration::parse(r).is_err());
    }
}
