//! Secret scrubbing on **decoded** values (issue 24): what the agent reports (`error`, step
//! `console` and `network` JSON) reaches every role, Viewer included, so no secret variable's
//! value may survive in it in any encoding the agent may send.
//!
//! Searching the serialised JSON text misses a secret holding `"`, `\` or a control character
//! (the text holds `\"`, `\\`, `\u0001`), so scrubbing works on the decoded value instead:
//!
//! * every string of a JSON value — object keys included — is scrubbed, recursively;
//! * in each string, every secret is replaced in its raw form and in its JSON-escaped forms
//!   (`serde_json`'s, and the ASCII-only one with `\uXXXX` that Python and others write), for
//!   JSON text embedded in a console line;
//! * then the string is decoded — JSON string escapes, percent-encoding (RFC 3986 §2.1), and
//!   percent-encoding with `+` as space (HTML forms) — and when a decoded form still holds a
//!   secret the string is replaced by that decoded form, scrubbed, and examined again (up to
//!   [`MAX_DECODE_ROUNDS`] layers), so `?pw=p%40ss%22` loses `p@ss"`.
//!
//! Replacements are `[REDACTED]`. Secrets are applied longest first.

use std::borrow::Cow;

use serde_json::Value;

/// The replacement text.
pub const REDACTED: &str = "[REDACTED]";

/// Layers of encoding undone at most per string.
pub const MAX_DECODE_ROUNDS: usize = 4;

/// `inner` (JSON-escaped text) with every non-ASCII character written as `\uXXXX` (UTF-16,
/// surrogate pairs for astral characters).
fn ascii_escaped(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// `\u001f` → `\u001F`: the hex digits of every `\u` escape upper-cased (both are valid JSON).
fn upper_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\u") {
        out.push_str(&rest[..i + 2]);
        let tail = &rest[i + 2..];
        let n = tail
            .char_indices()
            .take(4)
            .last()
            .map_or(0, |(k, c)| k + c.len_utf8());
        out.push_str(&tail[..n].to_ascii_uppercase());
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

/// The forms of one secret searched in a decoded string: raw and JSON-escaped (serde_json's
/// escaping, the ASCII-only escaping, each with lower- and upper-case hex digits).
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    if let Ok(q) = serde_json::to_string(secret) {
        let inner = q[1..q.len() - 1].to_string();
        let ascii = ascii_escaped(&inner);
        out.push(upper_escapes(&inner));
        out.push(upper_escapes(&ascii));
        out.push(ascii);
        out.push(inner);
    }
    out.sort();
    out.dedup();
    out
}

/// Secrets prepared for scrubbing: every form of every non-empty secret, longest first.
#[derive(Clone, Default)]
pub struct Secrets {
    forms: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} forms)", self.forms.len())
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for f in &mut self.forms {
            zeroize::Zeroize::zeroize(f);
        }
    }
}

impl Secrets {
    /// Prepare `secrets` (empty ones are ignored).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms: Vec<String> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .flat_map(forms)
            .collect();
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        forms.dedup();
        Self { forms }
    }

    /// No secrets at all.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    fn found_in(&self, text: &str) -> bool {
        self.forms.iter().any(|f| text.contains(f.as_str()))
    }

    fn replace_all(&self, text: &str) -> String {
        let mut out = text.to_string();
        for f in &self.forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), REDACTED);
            }
        }
        out
    }

    /// `text` with every secret replaced, in its raw, JSON-escaped and decoded forms (see the
    /// module docs).
    pub fn scrub_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let mut s = self.replace_all(text);
        for _ in 0..MAX_DECODE_ROUNDS {
            match decodings(&s).into_iter().find(|d| self.found_in(d)) {
                Some(d) => s = self.replace_all(&d),
                None => break,
            }
        }
        s
    }

    /// A JSON value with every string (keys included) scrubbed by [`Secrets::scrub_str`].
    pub fn scrub_json(&self, v: &Value) -> Value {
        if self.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.scrub_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.scrub_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.scrub_str(k), self.scrub_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Decoded forms of `s` that differ from it: JSON string escapes, percent-encoding, and
/// percent-encoding with `+` as space.
fn decodings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.contains('\\') {
        if let Ok(d) = serde_json::from_str::<String>(&format!("\"{s}\"")) {
            if d != s {
                out.push(d);
            }
        }
    }
    if s.contains('%') {
        if let Cow::Owned(d) = percent_encoding::percent_decode_str(s).decode_utf8_lossy() {
            out.push(d);
        }
    }
    if s.contains('+') {
        let plus = s.replace('+', " ");
        let d = percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned();
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    use proptest::prelude::*;
    use serde_json::json;

    /// Every string of `v`, keys included.
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| {
                out.push(k.clone());
                strings(x, out);
            }),
            _ => {}
        }
    }

    fn assert_clean(v: &Value, secret: &str) {
        let mut all = Vec::new();
        strings(v, &mut all);
        let escaped = serde_json::to_string(secret).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        for s in all {
            assert!(!s.contains(secret), "raw secret left in {s:?}");
            assert!(!s.contains(escaped), "escaped secret left in {s:?}");
            let d = percent_encoding::percent_decode_str(&s).decode_utf8_lossy();
            assert!(!d.contains(secret), "encoded secret left in {s:?}");
        }
    }

    #[test]
    fn quotes_backslashes_and_controls_are_scrubbed_in_every_field() {
        for secret in [
            "pa\"ss-word",
            "back\\slash-9",
            "ctl\u{1}\u{7f}x-42",
            "ünï\u{2028}cødé-7",
        ] {
            let s = Secrets::new([secret]);
            let mut v = json!({
                "text": format!("pw={secret}!"),
                "nested": {"json": format!("{{\"pw\":{}}}", serde_json::to_string(secret).unwrap())},
                "form": format!("a=1&pw={}", utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string().replace("%20", "+")),
            });
            v.as_object_mut().unwrap().insert(
                secret.to_string(),
                json!([format!(
                    "https://shop.example/login?pw={}",
                    utf8_percent_encode(secret, NON_ALPHANUMERIC)
                )]),
            );
            let out = s.scrub_json(&v);
            assert_clean(&out, secret);
            assert!(out.to_string().contains(REDACTED));
        }
    }

    #[test]
    fn no_secrets_or_no_match_leaves_values_alone() {
        let v = json!({"a": ["x%41", "y\\n", 1, null]});
        assert_eq!(Secrets::new(Vec::<&str>::new()).scrub_json(&v), v);
        assert_eq!(Secrets::new(["zzzz-not-there"]).scrub_json(&v), v);
    }

    fn secret_strategy() -> impl Strategy<Value = String> {
        // Quotes, backslashes, control characters, percent signs, plus signs, spaces and
        // arbitrary unicode, 4–24 chars; never a piece of the replacement text itself.
        prop::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('%'),
                Just('+'),
                Just(' '),
                prop::char::range('\u{0}', '\u{1f}'),
                prop::char::any(),
                prop::char::range('a', 'z'),
            ],
            4..24,
        )
        .prop_map(|v| v.into_iter().collect::<String>())
        // A secret holding `[` or `]` could overlap the replacement's edges; one inside it would
        // be recreated by it.
        .prop_filter("disjoint from [REDACTED]", |s| {
            !REDACTED.contains(s.as_str()) && !s.contains('[') && !s.contains(']')
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_secrets_never_survive_any_encoding(secret in secret_strategy(), pad in "[a-z ]{0,8}") {
            let s = Secrets::new([secret.as_str()]);
            let enc = utf8_percent_encode(&secret, NON_ALPHANUMERIC).to_string();
            let mut v = json!({
                "console": [
                    {"level": "info", "text": format!("{pad}{secret}{pad}")},
                    {"level": "log", "text": format!("{{\"v\":{}}}", serde_json::to_string(&secret).unwrap())},
                ],
                "network": {
                    "url": format!("https://shop.example/p?q={enc}&r=1"),
                    "form": format!("q={}", enc.replace("%20", "+")),
                },
            });
            v["network"].as_object_mut().unwrap().insert(secret.clone(), Value::String(pad));
            let out = s.scrub_json(&v);
            assert_clean(&out, &secret);
        }
    }
}
