//! Flows: ordered steps of eight types, validated on save. A flow is `{name, tags, source,
//! steps}`; each step is an object with `type` and its options, e.g.
//! `{"type": "click", "selector": "#go"}`. Validation errors name the step index and field
//! (`steps[2].selector`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest `wait.timeout_ms` (5 minutes).
pub const MAX_WAIT_MS: u64 = 300_000;
/// Default `wait.timeout_ms`.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// Most steps in one flow.
pub const MAX_STEPS: usize = 500;

/// A validation failure: field path (`steps[3].selector`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path.
    pub field: String,
    /// Message.
    pub message: String,
}

impl FieldError {
    /// The message as a person reads it: steps numbered from 1 like the dashboard (the `field`
    /// path keeps the API's 0-based index), e.g. `step 2 (url): must not be empty`.
    pub fn human(&self) -> String {
        let Some(rest) = self.field.strip_prefix("steps[") else {
            return if self.field.is_empty() {
                self.message.clone()
            } else {
                format!("{}: {}", self.field, self.message)
            };
        };
        let (idx, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let n = idx.parse::<usize>().map(|i| i + 1).unwrap_or(0);
        let tail = tail.trim_start_matches('.');
        if tail.is_empty() {
            format!("step {n}: {}", self.message)
        } else {
            format!("step {n} ({tail}): {}", self.message)
        }
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Rectangle of a checkpoint region, in CSS pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// What a `wait` step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitFor {
    /// A selector appears.
    Selector,
    /// No network activity.
    NetworkIdle,
    /// The URL matches.
    Url,
    /// A fixed time.
    Timeout,
}

/// `assert` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assertion {
    /// Element exists.
    Exists,
    /// Element does not exist.
    NotExists,
    /// Text equals `expected`.
    TextEquals,
    /// Text contains `expected`.
    TextContains,
    /// Attribute `attribute` equals `expected`.
    AttrEquals,
}

/// One step, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Go to a URL.
    Navigate {
        /// Absolute http(s) URL or a path relative to the application's base URL.
        url: String,
    },
    /// Click an element.
    Click {
        /// CSS selector.
        selector: String,
        /// Which match (0-based).
        #[serde(default)]
        nth: u32,
        /// Click even if covered/disabled.
        #[serde(default)]
        force: bool,
    },
    /// Type into a field.
    Fill {
        /// CSS selector.
        selector: String,
        /// Literal or `{{variable}}`.
        value: String,
        /// Clear the field first.
        #[serde(default = "yes")]
        clear_first: bool,
    },
    /// Choose an option.
    Select {
        /// CSS selector.
        selector: String,
        /// Option value (agents try value, label, then index).
        value: String,
    },
    /// Wait for something.
    Wait {
        /// What to wait for.
        #[serde(rename = "for")]
        for_: WaitFor,
        /// Selector (for `selector`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
        /// URL (for `url`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Timeout in ms (≤ 300000).
        #[serde(default = "default_wait")]
        timeout_ms: u64,
    },
    /// Check the page.
    Assert {
        /// CSS selector.
        selector: String,
        /// Kind.
        assertion: Assertion,
        /// Expected text/value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<String>,
        /// Attribute (for `attr_equals`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribute: Option<String>,
    },
    /// AI vision checkpoint.
    Checkpoint {
        /// What should be true of the screenshot.
        expectation: String,
        /// Optional region to crop to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<Region>,
    },
    /// Take a screenshot, masking selectors.
    Screenshot {
        /// Selectors painted out before storage.
        #[serde(default)]
        mask: Vec<String>,
        /// Whole page instead of the viewport.
        #[serde(default)]
        full_page: bool,
    },
}

fn yes() -> bool {
    true
}
fn default_wait() -> u64 {
    DEFAULT_WAIT_MS
}

impl Step {
    /// Step type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Navigate { .. } => "navigate",
            Step::Click { .. } => "click",
            Step::Fill { .. } => "fill",
            Step::Select { .. } => "select",
            Step::Wait { .. } => "wait",
            Step::Assert { .. } => "assert",
            Step::Checkpoint { .. } => "checkpoint",
            Step::Screenshot { .. } => "screenshot",
        }
    }

    /// Variable names referenced as `{{name}}` in text options.
    pub fn variables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let texts: Vec<&str> = match self {
            Step::Navigate { url } => vec![url],
            Step::Fill { value, .. } | Step::Select { value, .. } => vec![value],
            Step::Assert {
                expected: Some(e), ..
            } => vec![e],
            Step::Wait { url: Some(u), .. } => vec![u],
            _ => vec![],
        };
        for t in texts {
            out.extend(template_vars(t));
        }
        out
    }
}

/// Where a flow would send a secret variable outside the application: the first step that
/// templates one of `secret_names` into a `navigate` URL whose origin is not `base_url`'s (or
/// cannot be known before the variables are filled in: the origin must be fixed by the literal
/// text before the first `{{`), or into an assertion's `expected` (the agent would report the
/// value in its step error). Returns `(step index, why)`.
pub fn secret_outside_origin(
    steps: &[Step],
    secret_names: &[String],
    base_url: &str,
) -> Option<(usize, String)> {
    let uses_secret = |t: &str| template_vars(t).iter().any(|v| secret_names.contains(v));
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Navigate { url, .. }
                if uses_secret(url) && !same_origin_prefix(url, base_url) =>
            {
                return Some((
                    i,
                    format!(
                        "step {i} (navigate) puts a secret variable into a URL outside the application's origin ({}); secrets may only go to the application's own base_url origin",
                        origin_text(base_url)
                    ),
                ));
            }
            Step::Assert {
                expected: Some(e), ..
            } if uses_secret(e) => {
                return Some((
                    i,
                    format!("step {i} (assert) compares against a secret variable; its value would appear in the step's result"),
                ));
            }
            _ => {}
        }
    }
    None
}

fn origin_text(base_url: &str) -> String {
    url::Url::parse(base_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| base_url.to_string())
}

/// Whether the literal text of `url` before its first placeholder fixes an origin equal to
/// `base_url`'s (relative URLs resolve against `base_url`).
fn same_origin_prefix(url: &str, base_url: &str) -> bool {
    let prefix = &url[..url.find("{{").unwrap_or(url.len())];
    let Ok(base) = url::Url::parse(base_url) else {
        return false;
    };
    if prefix.is_empty() {
        return false;
    }
    let scheme_end = prefix.find(':');
    let first_delim = prefix.find(['/', '?', '#']);
    let absolute = prefix.starts_with("//")
        || matches!((scheme_end, first_delim), (Some(c), Some(d)) if c < d)
        || (scheme_end.is_some() && first_delim.is_none());
    if !absolute {
        // A path, query or fragment relative to the base keeps its origin.
        return base.join(prefix).is_ok_and(|u| u.origin() == base.origin());
    }
    // The authority must end inside the literal prefix (`https://app.example/…`), else the
    // secret could extend the host.
    let after = match prefix.find("//") {
        Some(i) => &prefix[i + 2..],
        None => return false,
    };
    if !after.contains(['/', '?', '#']) {
        return false;
    }
    base.join(prefix).is_ok_and(|u| u.origin() == base.origin())
}

/// Names inside `{{…}}` placeholders.
pub fn template_vars(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push(after[..end].trim().to_string());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    out
}

/// Replace `{{name}}` placeholders using `lookup`; unknown names stay as written.
pub fn render_template(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `name` is a valid variable name: `[A-Za-z_][A-Za-z0-9_]{0,63}`.
pub fn valid_variable_name(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where a flow came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowSource {
    /// Written by hand.
    Manual,
    /// Recorded in a browser.
    Recorded,
    /// Generated by AI.
    Ai,
    /// Imported.
    Imported,
}

/// A validated flow definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowDef {
    /// 1–200 chars.
    pub name: String,
    /// Up to 32 tags of 1–64 chars, deduplicated, sorted.
    pub tags: Vec<String>,
    /// Origin.
    pub source: FlowSource,
    /// 1–500 steps.
    pub steps: Vec<Step>,
}

fn nonempty(field: String, v: &str, max: usize) -> Result<(), FieldError> {
    if v.trim().is_empty() {
        return Err(err(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(err(field, format!("longer than {max} characters")));
    }
    Ok(())
}

fn check_url(field: String, u: &str) -> Result<(), FieldError> {
    nonempty(field.clone(), u, 2048)?;
    let ok = u.starts_with("https://")
        || u.starts_with("http://")
        || u.starts_with('/')
        || u.starts_with("{{");
    if !ok || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            field,
            "must be an http(s) URL or a path starting with /",
        ));
    }
    Ok(())
}

impl FlowDef {
    /// Parse and validate a JSON body `{name, tags, source, steps}`.
    pub fn parse(v: &Value) -> Result<Self, FieldError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err("", "expected a JSON object"))?;
        for k in obj.keys() {
            if !["name", "tags", "source", "steps"].contains(&k.as_str()) {
                return Err(err(k.clone(), "unknown field"));
            }
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| err("name", "required string"))?;
        crate::domain::DisplayName::parse(name, 200).map_err(|e| err("name", e.0))?;
        let mut tags: Vec<String> = match obj.get("tags") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let s = t
                        .as_str()
                        .ok_or_else(|| err(format!("tags[{i}]"), "must be a string"))?;
                    nonempty(format!("tags[{i}]"), s, 64)?;
                    Ok(s.trim().to_string())
                })
                .collect::<Result<_, FieldError>>()?,
            Some(_) => return Err(err("tags", "must be an array of strings")),
        };
        tags.sort();
        tags.dedup();
        if tags.len() > 32 {
            return Err(err("tags", "at most 32 tags"));
        }
        let source = match obj.get("source") {
            None | Some(Value::Null) => FlowSource::Manual,
            Some(s) => serde_json::from_value(s.clone())
                .map_err(|_| err("source", "must be one of manual, recorded, ai, imported"))?,
        };
        let steps_v = obj
            .get("steps")
            .and_then(Value::as_array)
            .ok_or_else(|| err("steps", "required array"))?;
        if steps_v.is_empty() || steps_v.len() > MAX_STEPS {
            return Err(err("steps", format!("must hold 1 to {MAX_STEPS} steps")));
        }
        let steps = steps_v
            .iter()
            .enumerate()
            .map(|(i, s)| parse_step(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.trim().to_string(),
            tags,
            source,
            steps,
        })
    }
}

/// Parse and validate one step (index `i` for messages).
pub fn parse_step(i: usize, v: &Value) -> Result<Step, FieldError> {
    let f = |name: &str| format!("steps[{i}].{name}");
    let obj: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| err(format!("steps[{i}]"), "must be an object"))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| err(f("type"), "required"))?;
    let known: &[&str] = match kind {
        "navigate" => &["url"],
        "click" => &["selector", "nth", "force"],
        "fill" => &["selector", "value", "clear_first"],
        "select" => &["selector", "value"],
        "wait" => &["for", "selector", "url", "timeout_ms"],
        "assert" => &["selector", "assertion", "expected", "attribute"],
        "checkpoint" => &["expectation", "region"],
        "screenshot" => &["mask", "full_page"],
        _ => return Err(err(
            f("type"),
            "must be one of navigate, click, fill, select, wait, assert, checkpoint, screenshot",
        )),
    };
    for k in obj.keys() {
        if k != "type" && !known.contains(&k.as_str()) {
            return Err(err(f(k), format!("unknown option for a {kind} step")));
        }
    }
    // Option types first, so errors name the exact field (serde's tagged-enum errors do not).
    for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "type") {
        let ok = match k.as_str() {
            "nth" | "timeout_ms" => v.is_u64(),
            "force" | "clear_first" | "full_page" => v.is_boolean(),
            "mask" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "region" => v.is_object() || v.is_null(),
            "selector" | "url" | "expected" | "attribute" => v.is_string() || v.is_null(),
            _ => v.is_string(),
        };
        if !ok {
            return Err(err(f(k), format!("has the wrong type for a {kind} step")));
        }
    }
    // Remaining errors (missing fields, bad enum values): name the field serde complains about.
    let step: Step = serde_json::from_value(v.clone()).map_err(|e| {
        let m = e.to_string();
        let field = m
            .split('`')
            .nth(1)
            .filter(|x| known.contains(x))
            .map(f)
            .unwrap_or_else(|| format!("steps[{i}]"));
        let message = match m.strip_prefix("missing field `") {
            Some(r) => format!(
                "a {kind} step needs `{}`",
                r.split('`').next().unwrap_or_default()
            ),
            None => format!("invalid {kind} step: {}", crate::domain::truncate(&m, 160)),
        };
        err(field, message)
    })?;
    match &step {
        Step::Navigate { url } => check_url(f("url"), url)?,
        Step::Click { selector, .. } => nonempty(f("selector"), selector, 1024)?,
        Step::Fill {
            selector, value, ..
        } => {
            nonempty(f("selector"), selector, 1024)?;
            if value.chars().count() > 10_000 {
                return Err(err(f("value"), "longer than 10000 characters"));
            }
            for name in template_vars(value) {
                if !valid_variable_name(&name) {
                    return Err(err(
                        f("value"),
                        format!(
                            "`{{{{{}}}}}` is not a valid variable name",
                            crate::domain::truncate(&name, 64)
                        ),
                    ));
                }
            }
        }
        Step::Select { selector, value } => {
            nonempty(f("selector"), selector, 1024)?;
            nonempty(f("value"), value, 1024)?;
        }
        Step::Wait {
            for_,
            selector,
            url,
            timeout_ms,
        } => {
            if *timeout_ms == 0 || *timeout_ms > MAX_WAIT_MS {
                return Err(err(f("timeout_ms"), format!("must be 1..={MAX_WAIT_MS}")));
            }
            match for_ {
                WaitFor::Selector => {
                    nonempty(f("selector"), selector.as_deref().unwrap_or(""), 1024)?
                }
                WaitFor::Url => check_url(f("url"), url.as_deref().unwrap_or(""))?,
                WaitFor::NetworkIdle | WaitFor::Timeout => {}
            }
        }
        Step::Assert {
            selector,
            assertion,
            expected,
            attribute,
        } => {
            nonempty(f("selector"), selector, 1024)?;
            match assertion {
                Assertion::TextEquals | Assertion::TextContains if expected.is_none() => {
                    return Err(err(f("expected"), "required for this assertion"))
                }
                Assertion::AttrEquals => {
                    nonempty(f("attribute"), attribute.as_deref().unwrap_or(""), 256)?;
                    if expected.is_none() {
                        return Err(err(f("expected"), "required for attr_equals"));
                    }
                }
                _ => {}
            }
        }
        Step::Checkpoint {
            expectation,
            region,
        } => {
            nonempty(f("expectation"), expectation, 2000)?;
            if let Some(r) = region {
                if r.width == 0 || r.height == 0 {
                    return Err(err(f("region"), "width and height must be positive"));
                }
            }
        }
        Step::Screenshot { mask, .. } => {
            if mask.len() > 100 {
                return Err(err(f("mask"), "at most 100 selectors"));
            }
            for (j, m) in mask.iter().enumerate() {
                nonempty(format!("steps[{i}].mask[{j}]"), m, 1024)?;
            }
        }
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_stay_in_the_application_origin() {
        let nav = |u: &str| Step::Navigate { url: u.into() };
        let secret = vec!["tok".to_string()];
        let base = "https://app.example:8443/base/";
        for ok in [
            "/login?t={{tok}}",
            "next?t={{tok}}",
            "https://app.example:8443/x?t={{tok}}",
            "/{{user}}/x?t={{tok}}",
            "https://evil.example/?u={{user}}",
        ] {
            assert_eq!(
                secret_outside_origin(&[nav(ok)], &secret, base),
                None,
                "{ok}"
            );
        }
        for bad in [
            "https://evil.example/?t={{tok}}",
            "//evil.example/?t={{tok}}",
            "https://app.example:8443{{tok}}",
            "https://app.example{{tok}}/",
            "http://app.example:8443/?t={{tok}}",
            "{{tok}}",
            "{{host}}/x?t={{tok}}",
        ] {
            let r = secret_outside_origin(&[nav("/"), nav(bad)], &secret, base);
            assert_eq!(r.map(|r| r.0), Some(1), "{bad}");
        }
        let assert = Step::Assert {
            selector: "#x".into(),
            assertion: Assertion::TextEquals,
            expected: Some("{{tok}}".into()),
            attribute: None,
        };
        assert_eq!(
            secret_outside_origin(&[assert], &secret, base).map(|r| r.0),
            Some(0)
        );
    }

    #[test]
    fn defaults_and_errors() {
        let f = FlowDef::parse(&json!({"name": "x", "steps": [
            {"type": "click", "selector": "#go"},
            {"type": "fill", "selector": "#pw", "value": "{{password}}"},
            {"type": "wait", "for": "network-idle"}
        ]}))
        .unwrap();
        assert_eq!(
            f.steps[0],
            Step::Click {
                selector: "#go".into(),
                nth: 0,
                force: false
            }
        );
        assert!(matches!(
            f.steps[1],
            Step::Fill {
                clear_first: true,
                ..
            }
        ));
        assert!(matches!(
            f.steps[2],
            Step::Wait {
                timeout_ms: 30_000,
                ..
            }
        ));
        let e = FlowDef::parse(
            &json!({"name": "x", "steps": [{"type": "navigate", "url": "/"}, {"type": "click"}]}),
        )
        .unwrap_err();
        assert_eq!(e.field, "steps[1].selector");
        assert!(
            e.human().starts_with("step 2 (selector): "),
            "{}",
            e.human()
        );
        assert!(!e.human().contains("missing field"), "{}", e.human());
        let e = FlowDef::parse(&json!({"name": "x", "steps": [{"type": "wait", "for": "timeout", "timeout_ms": 300001}]})).unwrap_err();
        assert_eq!(e.field, "steps[0].timeout_ms");
        let e = FlowDef::parse(&json!({"name": "x", "steps": [{"type": "teleport"}]})).unwrap_err();
        assert_eq!(e.field, "steps[0].type");
        let e = FlowDef::parse(
            &json!({"name": "x", "steps": [{"type": "click", "selector": "a", "bogus": 1}]}),
        )
        .unwrap_err();
        assert_eq!(e.field, "steps[0].bogus");
        let e = FlowDef::parse(&json!({"name": "x", "steps": [{"type": "assert", "selector": "a", "assertion": "text_equals"}]})).unwrap_err();
        assert_eq!(e.field, "steps[0].expected");
    }

    #[test]
    fn templates() {
        assert_eq!(template_vars("a {{ x }} b {{y}}"), vec!["x", "y"]);
        let r = render_template("u={{user}} p={{pw}} q={{nope}}", &|n| match n {
            "user" => Some("bob".into()),
            "pw" => Some("s3".into()),
            _ => None,
        });
        assert_eq!(r, "u=bob p=s3 q={{nope}}");
    }
}
