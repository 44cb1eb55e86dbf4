//! Bearer secrets: random, shown once, stored as SHA-256 (DESIGN.md "Identities and roles").
//!
//! Shapes (the visible prefix names the kind and the tenant, so a leaked token is recognisable
//! and a deployment can route it without a lookup):
//! - agent token: `fga_<tenant>_<43 base64url chars>`
//! - SCIM token:  `fgs_<tenant>_<43 base64url chars>`
//! - session id (cookie `fg_session`): `fgu_<tenant>_<…>` for tenant users,
//!   `fgp_catalog_<…>` for PlatformAdmins.
//! - CSRF token: 43 base64url chars.

use base64::Engine;
use rand::RngCore;

/// Kinds of bearer secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Agent service token.
    Agent,
    /// SCIM provisioning token.
    Scim,
    /// Tenant user session.
    UserSession,
    /// PlatformAdmin session.
    PlatformSession,
}

impl TokenKind {
    /// The visible prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Agent => "fga",
            TokenKind::Scim => "fgs",
            TokenKind::UserSession => "fgu",
            TokenKind::PlatformSession => "fgp",
        }
    }
    fn from_prefix(p: &str) -> Option<Self> {
        Some(match p {
            "fga" => TokenKind::Agent,
            "fgs" => TokenKind::Scim,
            "fgu" => TokenKind::UserSession,
            "fgp" => TokenKind::PlatformSession,
            _ => return None,
        })
    }
}

/// 256 random bits as unpadded base64url (43 chars).
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A new token `<prefix>_<scope>_<secret>`; `scope` is a tenant id or `catalog`.
pub fn new_token(kind: TokenKind, scope: &str) -> String {
    format!("{}_{}_{}", kind.prefix(), scope, random_secret())
}

/// Split a presented token into its kind and scope (tenant id or `catalog`), without trusting it.
pub fn parse_token(t: &str) -> Option<(TokenKind, &str)> {
    if t.len() > 256 {
        return None;
    }
    let mut it = t.splitn(3, '_');
    let kind = TokenKind::from_prefix(it.next()?)?;
    let scope = it.next()?;
    let secret = it.next()?;
    if secret.len() != 43 || scope.is_empty() {
        return None;
    }
    Some((kind, scope))
}

/// The stored digest of a token: lowercase hex SHA-256.
pub fn token_hash(t: &str) -> String {
    super::sha256_hex(t.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = new_token(TokenKind::Agent, "eus-abc123");
        let (k, s) = parse_token(&t).unwrap();
        assert_eq!(k, TokenKind::Agent);
        assert_eq!(s, "eus-abc123");
        assert!(parse_token("fga_x").is_none());
        assert!(parse_token("zzz_eus-abc123_aaaa").is_none());
    }
}
