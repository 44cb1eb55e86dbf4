//! `group DN → role` decision: the highest mapped role among the user's groups wins
//! (Owner > Admin > Tester > Viewer); with no match, the default role, or a denial when the
//! default is `null`. Group DNs are compared semantically (see `dn`).

use std::collections::HashSet;

use super::config::StoredMapping;
use super::dn;
use crate::domain::Role;

/// The outcome of mapping one user's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Rules whose group the user is in (in configuration order).
    pub matched: Vec<StoredMapping>,
    /// The role given, or `None` for "deny".
    pub role: Option<Role>,
    /// Whether the role came from `default_role` (no rule matched).
    pub by_default: bool,
}

/// The highest of `roles` (Owner > Admin > Tester > Viewer): the rule shared by directory login
/// and OpenID Connect sign-in (`auth::oidc::decide`).
pub fn highest(roles: impl Iterator<Item = Role>) -> Option<Role> {
    roles.max_by_key(|r| r.rank())
}

/// Decide the role for a user in `groups` (DN strings as the directory returned them).
pub fn decide(groups: &[String], rules: &[StoredMapping], default_role: Option<Role>) -> Decision {
    let keys: HashSet<String> = groups.iter().filter_map(|g| dn::key(g)).collect();
    let matched: Vec<StoredMapping> = rules
        .iter()
        .filter(|m| dn::key(&m.group_dn).is_some_and(|k| keys.contains(&k)))
        .cloned()
        .collect();
    let best = highest(matched.iter().map(|m| m.role));
    match best {
        Some(r) => Decision {
            matched,
            role: Some(r),
            by_default: false,
        },
        None => Decision {
            matched,
            role: default_role,
            by_default: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(g: &str, r: Role) -> StoredMapping {
        StoredMapping {
            group_dn: g.into(),
            role: r,
        }
    }

    #[test]
    fn precedence_owner_admin_tester_viewer() {
        let rules = vec![
            rule("cn=viewers,dc=x", Role::Viewer),
            rule("cn=owners,dc=x", Role::Owner),
            rule("cn=testers,dc=x", Role::Tester),
            rule("cn=admins,dc=x", Role::Admin),
        ];
        let d = decide(
            &[
                "CN=Testers,DC=x".into(),
                "cn=admins,dc=x".into(),
                "cn=viewers,dc=x".into(),
            ],
            &rules,
            Some(Role::Viewer),
        );
        assert_eq!(d.role, Some(Role::Admin));
        assert_eq!(d.matched.len(), 3);
        assert!(!d.by_default);
        let d = decide(&["cn=owners,dc=x".into()], &rules, None);
        assert_eq!(d.role, Some(Role::Owner));
    }

    #[test]
    fn default_or_deny() {
        let rules = vec![rule("cn=admins,dc=x", Role::Admin)];
        let d = decide(&["cn=other,dc=x".into()], &rules, Some(Role::Viewer));
        assert_eq!(d.role, Some(Role::Viewer));
        assert!(d.by_default);
        let d = decide(&[], &rules, None);
        assert_eq!(d.role, None);
    }

    #[test]
    fn semantic_group_match() {
        let rules = vec![rule("CN=Ops\\2c EMEA, OU=Groups, DC=corp", Role::Tester)];
        let d = decide(&["cn=Ops\\, EMEA,ou=groups,dc=corp".into()], &rules, None);
        assert_eq!(d.role, Some(Role::Tester));
        // A look-alike is not a match.
        let d = decide(&["cn=Ops,cn=EMEA,ou=groups,dc=corp".into()], &rules, None);
        assert_eq!(d.role, None);
    }
}
