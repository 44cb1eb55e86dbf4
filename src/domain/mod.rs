//! Validating domain types and entities (no actix, no rusqlite), after zero-to-production's
//! `src/domain/`: a value of these types cannot hold an invalid value.

pub mod flow;
pub mod plan;
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

/// A tenant display name: 1–64 chars, letters, digits, space, `-`, `_`, `.`; unique per deployment
/// (compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantName(String);

impl TenantName {
    /// Parse a name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let t = s.trim();
        let ok = (1..=64).contains(&t.chars().count())
            && t.chars().all(|c| c.is_alphanumeric() || " -_.".contains(c));
        if ok {
            Ok(Self(t.to_string()))
        } else {
            Err(Invalid(
                "tenant name must be 1-64 letters, digits, spaces, '-', '_' or '.'".into(),
            ))
        }
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
}
