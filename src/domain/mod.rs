//! Validating domain types and entities (no actix, no rusqlite), after zero-to-production's
//! `src/domain/`: a value of these types cannot hold an invalid value.

pub mod flow;
pub mod plan;
pub mod redact;
pub mod role;
pub mod schedule;
pub mod scim;

pub use plan::{Entitlements, Plan};
pub use role::{Permission, Role};

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A deployment region name: 2–16 lowercase ASCII letters or digits (e.g. `eus`, `local`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Region(String);

impl Region {
    /// Parse a region name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = (2..=16).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid(format!(
                "`{s}` is not a region name (2-16 lowercase letters or digits)"
            )))
        }
    }
    /// The default region `local`.
    pub fn local() -> Self {
        Self("local".into())
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Alphabet of the random part of tenant ids (lowercase, no look-alikes `0 1 i l o`).
const ID_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// A tenant id, `<region>-<6 random chars>` (e.g. `eus-7k2m9q`): the region is part of the id so
/// any deployment can tell where a tenant lives (DESIGN.md, "Tenants and regions").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TenantId(String);

impl TenantId {
    /// A fresh random id in `region`.
    pub fn generate(region: &Region) -> Self {
        let mut rng = rand::thread_rng();
        let suffix: String = (0..6)
            .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
            .collect();
        Self(format!("{}-{}", region.as_str(), suffix))
    }
    /// Parse `<region>-<suffix>`; the suffix is 4–32 chars of `[a-z0-9]`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = || Invalid(format!("`{}` is not a tenant id", truncate(s, 64)));
        let (region, suffix) = s.split_once('-').ok_or_else(bad)?;
        Region::parse(region).map_err(|_| bad())?;
        let ok = (4..=32).contains(&suffix.len())
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(bad())
        }
    }
    /// The region encoded in the id.
    pub fn region(&self) -> Region {
        let r = self.0.split_once('-').map(|(r, _)| r).unwrap_or("local");
        Region(r.to_string())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `c` may not appear in a display name: control characters (C0 incl. NUL, DEL, C1)
/// and the Unicode bidirectional formatting characters (LRE/RLE/PDF/LRO/RLO U+202A–U+202E,
/// LRI/RLI/FSI/PDI U+2066–U+2069, LRM/RLM/ALM U+200E, U+200F, U+061C), which can make a name
/// display differently from what it is (CVE-2021-42574, "Trojan Source").
pub fn forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// A display name (applications, flows, tenants, tokens): trimmed, 1..=`max` characters, no
/// control characters (NUL included) and no bidirectional overrides (see [`forbidden_in_name`]).
/// The one rule for every name a person gives an object, used by the API and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parse a name of at most `max` characters.
    pub fn parse(s: &str, max: usize) -> Result<Self, Invalid> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Invalid("a name is required".into()));
        }
        if t.chars().count() > max {
            return Err(Invalid(format!("a name is at most {max} characters long")));
        }
        if t.chars().any(forbidden_in_name) {
            return Err(Invalid(
                "a name must not contain control characters or bidirectional text overrides".into(),
            ));
        }
        Ok(Self(t.to_string()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A tenant display name: 1–64 chars, letters, digits, space, `-`, `_`, `.`; not shaped like a
/// tenant id (`<region>-<suffix>`, which would make `--tenant NAME` ambiguous); unique per
/// deployment (compared case-insensitively). The API and the CLI both parse names with this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantName(String);

impl TenantName {
    /// Parse a name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let t = DisplayName::parse(s, 64)
            .map_err(|e| Invalid(format!("tenant name: {}", e.0)))?
            .into_string();
        if !t.chars().all(|c| c.is_alphanumeric() || " -_.".contains(c)) {
            return Err(Invalid(
                "tenant name must be 1-64 letters, digits, spaces, '-', '_' or '.'".into(),
            ));
        }
        // In any letter case: residency reads `WEU-ABCD12` as the id `weu-abcd12`.
        if TenantId::parse(&t.to_ascii_lowercase()).is_ok() {
            return Err(Invalid(format!(
                "tenant name `{t}` has the shape of a tenant id (`<region>-<suffix>`, any case); choose another name"
            )));
        }
        Ok(Self(t))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, normalised (trimmed, lowercased). Deliberately simple: `local@domain` with
/// no spaces or control characters, at most 254 bytes (RFC 5321 §4.5.3.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Email(String);

impl Email {
    /// Parse and normalise.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let t = s.trim().to_lowercase();
        let bad = || Invalid("not a valid email address".to_string());
        if t.len() > 254 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = t.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || domain.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(bad());
        }
        Ok(Self(t))
    }
    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Email::parse(&s)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random object id (UUID v4, hyphenated lowercase).
pub fn new_object_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Cut `s` to at most `max` chars (for echoing user input in messages).
pub fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Current UTC time as RFC 3339 with millisecond precision and `Z` (e.g. `2026-11-29T14:00:00.123Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_id_carries_region() {
        let r = Region::parse("eus").unwrap();
        let t = TenantId::generate(&r);
        assert!(t.as_str().starts_with("eus-"));
        assert_eq!(TenantId::parse(t.as_str()).unwrap().region(), r);
        assert!(TenantId::parse("EUS-abc123").is_err());
        assert!(TenantId::parse("eus").is_err());
        assert!(TenantId::parse("eus-../x").is_err());
    }

    #[test]
    fn email_normalised() {
        assert_eq!(
            Email::parse(" Admin@Example.COM ").unwrap().as_str(),
            "admin@example.com"
        );
        assert!(Email::parse("no-at").is_err());
        assert!(Email::parse("a b@c").is_err());
        assert!(Email::parse("@c").is_err());
    }

    #[test]
    fn one_rule_for_display_names() {
        assert_eq!(
            DisplayName::parse("  Shop  ", 100).unwrap().as_str(),
            "Shop"
        );
        assert!(DisplayName::parse("", 100).is_err());
        assert!(DisplayName::parse("a\0b", 100).is_err());
        assert!(DisplayName::parse("a\u{7}b", 100).is_err());
        assert!(DisplayName::parse("evil\u{202E}gpj.exe", 100).is_err());
        assert!(DisplayName::parse("x\u{2066}y", 100).is_err());
        assert!(DisplayName::parse("abc", 2).is_err());
        assert!(DisplayName::parse("Café Ünïcode ✓", 100).is_ok());
        assert!(TenantName::parse("weu-abcd12").is_err());
        assert!(TenantName::parse("local-7k2m9q").is_err());
        assert!(TenantName::parse("acme\0").is_err());
        assert!(TenantName::parse("Acme Corp").is_ok());
        assert!(TenantName::parse("acme-prod").is_err(), "shaped like an id");
        assert!(TenantName::parse("acme-x").is_ok());
    }
}
