//! Search filters (RFC 4515) built from the tenant's templates.
//!
//! Every value placed in a filter goes through [`ldap3::ldap_escape`] (`*` → `\2a`, `(` → `\28`,
//! `)` → `\29`, `\` → `\5c`, NUL → `\00`; RFC 4515 §3) exactly once. A DN placed in a filter
//! keeps its RFC 4514 escaping and gets filter escaping on top, so `CN=Doe\, Jane,…` becomes
//! `CN=Doe\5c, Jane,…` (case file C07). Substitution is a single pass, so a value that itself
//! contains `{dn}` or `{username}` is never substituted again.

/// The placeholder for the login name in `user_filter` (and optionally `group_filter`).
pub const USERNAME: &str = "username";
/// The placeholder for a DN in `group_filter`.
pub const DN: &str = "dn";

/// OID of AD's `LDAP_MATCHING_RULE_IN_CHAIN` (transitive membership).
pub const MATCHING_RULE_IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Render `template`, replacing each `{name}` with the filter-escaped value of `vars[name]`.
/// Unknown placeholders are left as they are (templates are validated on save).
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().find(|(n, _)| *n == name) {
                    Some((_, v)) => out.push_str(&ldap3::ldap_escape(*v)),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
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

fn placeholders(template: &str) -> Vec<&str> {
    let mut v = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                v.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    v
}

/// Check a template: at most 1024 bytes, parenthesised, only `allowed` placeholders, each
/// `required` one present, and a valid RFC 4515 filter once substituted.
pub fn validate(template: &str, allowed: &[&str], required: &[&str]) -> Result<(), TemplateError> {
    let t = template.trim();
    if t.is_empty() || t.len() > 1024 {
        return Err(TemplateError("filter must be 1-1024 bytes".into()));
    }
    if !(t.starts_with('(') && t.ends_with(')')) {
        return Err(TemplateError(
            "filter must be enclosed in parentheses, e.g. (uid={username})".into(),
        ));
    }
    let names = placeholders(t);
    if let Some(bad) = names.iter().find(|n| !allowed.contains(n)) {
        return Err(TemplateError(format!(
            "unknown placeholder {{{}}}; allowed: {}",
            crate::domain::truncate(bad, 32),
            allowed
                .iter()
                .map(|a| format!("{{{a}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for r in required {
        if !names.contains(r) {
            return Err(TemplateError(format!("filter must contain {{{r}}}")));
        }
    }
    let sample: Vec<(&str, &str)> = allowed.iter().map(|a| (*a, "x")).collect();
    if ldap3::parse_filter(render(t, &sample)).is_err() {
        return Err(TemplateError("not a valid LDAP filter (RFC 4515)".into()));
    }
    Ok(())
}

/// `(attr:1.2.840.113556.1.4.1941:=<group dn>)`: true on an entry that is a member of the group
/// directly or through any chain of nested groups (AD only).
pub fn in_chain(member_of_attr: &str, group_dn: &str) -> String {
    format!(
        "({member_of_attr}:{MATCHING_RULE_IN_CHAIN}:={})",
        ldap3::ldap_escape(group_dn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_filter_escaped() {
        let t = "(&(objectClass=user)(sAMAccountName={username}))";
        assert_eq!(
            render(t, &[(USERNAME, "jdoe")]),
            "(&(objectClass=user)(sAMAccountName=jdoe))"
        );
        assert_eq!(
            render(t, &[(USERNAME, "*")]),
            "(&(objectClass=user)(sAMAccountName=\\2a))"
        );
        assert_eq!(
            render(t, &[(USERNAME, "*)(sAMAccountName=*")]),
            "(&(objectClass=user)(sAMAccountName=\\2a\\29\\28sAMAccountName=\\2a))"
        );
        assert_eq!(
            render("(uid={username})", &[(USERNAME, "a\\b\0")]),
            "(uid=a\\5cb\\00)"
        );
    }

    #[test]
    fn dn_in_filter_gets_both_escapings() {
        // C07: the DN as returned by AD, placed in a group filter.
        let dn = "CN=Doe\\, Jane,OU=Staff,DC=corp,DC=example";
        assert_eq!(
            render("(&(objectClass=group)(member={dn}))", &[(DN, dn)]),
            "(&(objectClass=group)(member=CN=Doe\\5c, Jane,OU=Staff,DC=corp,DC=example))"
        );
    }

    #[test]
    fn single_pass_substitution() {
        let out = render(
            "(&(uid={username})(member={dn}))",
            &[(USERNAME, "{dn}"), (DN, "cn=x")],
        );
        assert_eq!(out, "(&(uid={dn})(member=cn=x))");
    }

    #[test]
    fn validation() {
        assert!(validate("(uid={username})", &[USERNAME], &[USERNAME]).is_ok());
        assert!(validate("uid={username}", &[USERNAME], &[USERNAME]).is_err());
        assert!(validate("(uid=alice)", &[USERNAME], &[USERNAME]).is_err());
        assert!(validate("(uid={user})", &[USERNAME], &[USERNAME]).is_err());
        assert!(validate("(&(uid={username})", &[USERNAME], &[USERNAME]).is_err());
        assert!(validate("(member={dn})", &[DN, USERNAME], &[]).is_ok());
    }

    #[test]
    fn in_chain_filter_parses() {
        let f = in_chain("memberOf", "CN=Ops\\, EMEA,OU=Groups,DC=corp,DC=example");
        assert_eq!(
            f,
            "(memberOf:1.2.840.113556.1.4.1941:=CN=Ops\\5c, EMEA,OU=Groups,DC=corp,DC=example)"
        );
        assert!(ldap3::parse_filter(&f).is_ok());
    }
}
