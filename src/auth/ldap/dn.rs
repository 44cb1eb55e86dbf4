//! Distinguished names (RFC 4514): parsing for validation and **semantic** comparison.
//!
//! Directories spell the same DN differently — AD returns `CN=Doe\, Jane,OU=Staff,…`, OpenLDAP
//! `cn=Doe\2C Jane,ou=staff,…`, and an admin may type `CN=Doe\2c Jane, OU=Staff, …` — so DNs are
//! never compared byte by byte (case file C07). [`Dn::parse`] unescapes every value (`\,` and
//! `\2c` alike), and [`Dn::normalized`] gives a canonical key: attribute types lowercased,
//! values case-folded with insignificant spaces removed (caseIgnoreMatch, RFC 4517 §4.2.11),
//! multi-valued RDNs sorted, and every value re-escaped with [`ldap3::dn_escape`].
//!
//! A DN taken from the directory is **used as returned** for binds and searches (never
//! re-escaped or unescaped); normalisation only produces comparison keys. To place a DN inside
//! a filter it is filter-escaped (RFC 4515) on top of its DN escaping (see `filter`).

use std::fmt;

/// A DN that does not follow RFC 4514.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid distinguished name (RFC 4514): {0}")]
pub struct DnError(pub &'static str);

/// One attribute type and value of an RDN; the value is unescaped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ava {
    /// Lowercased attribute type (descriptor or numeric OID).
    attr: String,
    /// The value was given as `#hex` (BER), compared as lowercase hex.
    ber: bool,
    /// Comparison form of the value (case-folded, spaces collapsed), or the hex digits.
    key: String,
}

/// A parsed DN: a sequence of RDNs, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn {
    rdns: Vec<Vec<Ava>>,
}

fn is_descr(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

fn is_numericoid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

/// Whether `s` is an attribute description usable in a search's attribute list
/// (`descr` or `numericoid`, RFC 4512 §1.4), e.g. `mail`, `memberOf`, `2.5.4.3`.
pub fn is_attribute_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && (is_descr(s) || is_numericoid(s))
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Case-fold and collapse runs of white space (caseIgnoreMatch's insignificant space handling).
fn fold(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn attr_type(&mut self) -> Result<String, DnError> {
        self.skip_spaces();
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' {
                self.i += 1;
            } else {
                break;
            }
        }
        let t =
            std::str::from_utf8(&self.s[start..self.i]).map_err(|_| DnError("attribute type"))?;
        let t = t
            .strip_prefix("oid.")
            .or_else(|| t.strip_prefix("OID."))
            .unwrap_or(t);
        if !(is_descr(t) || is_numericoid(t)) {
            return Err(DnError("attribute type"));
        }
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return Err(DnError("missing `=`"));
        }
        self.i += 1;
        Ok(t.to_ascii_lowercase())
    }

    /// Parse a value up to an unescaped `,`, `+` or the end; returns (is BER, comparison key).
    fn value(&mut self) -> Result<(bool, String), DnError> {
        self.skip_spaces();
        if self.peek() == Some(b'#') {
            self.i += 1;
            let start = self.i;
            while self.peek().is_some_and(|c| hexval(c).is_some()) {
                self.i += 1;
            }
            let hex = &self.s[start..self.i];
            if hex.is_empty() || hex.len() % 2 != 0 {
                return Err(DnError("BER value must be an even number of hex digits"));
            }
            self.skip_spaces();
            return match self.peek() {
                None | Some(b',') | Some(b'+') => {
                    Ok((true, String::from_utf8_lossy(hex).to_ascii_lowercase()))
                }
                _ => Err(DnError("text after a BER value")),
            };
        }
        // Bytes of the value and whether each one was escaped (escaped spaces are significant).
        let mut out: Vec<(u8, bool)> = Vec::new();
        loop {
            match self.peek() {
                None | Some(b',') | Some(b'+') => break,
                Some(b'\\') => {
                    let a = self.s.get(self.i + 1).copied();
                    match a {
                        Some(c) if b" \"#+,;<=>\\".contains(&c) => {
                            out.push((c, true));
                            self.i += 2;
                        }
                        Some(c) if hexval(c).is_some() => {
                            let lo = self
                                .s
                                .get(self.i + 2)
                                .copied()
                                .and_then(hexval)
                                .ok_or(DnError("bad hex escape"))?;
                            let hi = hexval(c).ok_or(DnError("bad hex escape"))?;
                            out.push(((hi << 4) | lo, true));
                            self.i += 3;
                        }
                        _ => return Err(DnError("bad escape")),
                    }
                }
                Some(c) if c == b'"' || c == b';' || c == b'<' || c == b'>' || c == 0 => {
                    return Err(DnError("special character must be escaped"));
                }
                Some(c) => {
                    out.push((c, false));
                    self.i += 1;
                }
            }
        }
        // Unescaped trailing spaces are separators' padding, not part of the value.
        while out.last().is_some_and(|&(c, esc)| c == b' ' && !esc) {
            out.pop();
        }
        let bytes: Vec<u8> = out.into_iter().map(|(c, _)| c).collect();
        let v = String::from_utf8(bytes).map_err(|_| DnError("value is not UTF-8"))?;
        Ok((false, fold(&v)))
    }
}

impl Dn {
    /// Parse a DN string (RFC 4514, tolerating spaces around separators as RFC 2253 writers
    /// emit). The empty string is the empty (root) DN. At most 4096 bytes.
    pub fn parse(s: &str) -> Result<Self, DnError> {
        if s.len() > 4096 {
            return Err(DnError("too long"));
        }
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
        };
        let mut rdns = Vec::new();
        p.skip_spaces();
        if p.peek().is_none() {
            return Ok(Self { rdns });
        }
        loop {
            let mut rdn = Vec::new();
            loop {
                let attr = p.attr_type()?;
                let (ber, key) = p.value()?;
                rdn.push(Ava { attr, ber, key });
                if p.peek() == Some(b'+') {
                    p.i += 1;
                    continue;
                }
                break;
            }
            rdn.sort();
            rdns.push(rdn);
            match p.peek() {
                None => break,
                Some(b',') => p.i += 1,
                Some(_) => return Err(DnError("unexpected character")),
            }
        }
        Ok(Self { rdns })
    }

    /// Number of RDNs.
    pub fn len(&self) -> usize {
        self.rdns.len()
    }

    /// Whether this is the empty DN.
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// Canonical comparison key: two DNs naming the same entry give the same string.
    pub fn normalized(&self) -> String {
        self.rdns
            .iter()
            .map(|rdn| {
                rdn.iter()
                    .map(|a| {
                        if a.ber {
                            format!("{}=#{}", a.attr, a.key)
                        } else {
                            format!("{}={}", a.attr, ldap3::dn_escape(a.key.as_str()))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `self` equals `base` or lies below it.
    pub fn is_within(&self, base: &Dn) -> bool {
        self.rdns.len() >= base.rdns.len()
            && self.rdns[self.rdns.len() - base.rdns.len()..] == base.rdns[..]
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

/// Normalised key of a DN string, or `None` when it does not parse.
pub fn key(s: &str) -> Option<String> {
    Dn::parse(s).ok().map(|d| d.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_in_cn_spelled_three_ways_is_one_dn() {
        let ad = Dn::parse("CN=Doe\\, Jane,OU=Staff,DC=corp,DC=example").unwrap();
        let ol = Dn::parse("cn=Doe\\2C Jane,ou=staff,dc=corp,dc=example").unwrap();
        let typed = Dn::parse("cn=doe\\2c jane, ou=Staff , dc=corp, dc=example").unwrap();
        assert_eq!(ad.normalized(), ol.normalized());
        assert_eq!(ad.normalized(), typed.normalized());
        assert_eq!(ad.len(), 4);
        // The comma stays inside the first RDN.
        assert!(ad.normalized().starts_with("cn=doe\\2c jane,"));
    }

    #[test]
    fn different_entries_differ() {
        let a = key("cn=Doe\\, Jane,ou=staff,dc=corp").unwrap();
        let b = key("cn=Doe,cn=Jane,ou=staff,dc=corp").unwrap();
        assert_ne!(a, b);
        // Padding around separators is not part of the value; and under caseIgnoreMatch's
        // insignificant space handling (RFC 4518 §2.6.1) even an escaped trailing space or a
        // doubled inner space does not make another entry name.
        assert_eq!(key("cn=a ,dc=x"), key("cn=a,dc=x"));
        assert_eq!(key("cn=a\\ ,dc=x"), key("cn=a,dc=x"));
        assert_eq!(key("cn=a  b,dc=x"), key("cn=a b,dc=x"));
        // A string value that starts with an escaped `#` is not a BER value.
        assert_ne!(key("cn=\\#04,dc=x"), key("cn=#04,dc=x"));
    }

    #[test]
    fn multivalued_rdn_order_is_irrelevant() {
        assert_eq!(key("cn=a+uid=b,dc=x"), key("UID=B+CN=A,dc=x"));
    }

    #[test]
    fn special_values_roundtrip() {
        for v in [
            "a,b", "a+b", "a\"b", "a\\b", "<x>", "a;b", "#lead", " lead", "trail ", "*(x)",
        ] {
            let dn = format!("cn={},dc=x", ldap3::dn_escape(v));
            let parsed = Dn::parse(&dn).unwrap_or_else(|e| panic!("{dn}: {e}"));
            assert_eq!(parsed.len(), 2, "{dn}");
            let again = Dn::parse(&parsed.normalized()).unwrap();
            assert_eq!(again.normalized(), parsed.normalized(), "{dn}");
        }
        // Filter metacharacters are ordinary in a DN.
        assert!(Dn::parse("uid=s*(tar,ou=people,dc=x").is_ok());
    }

    #[test]
    fn malformed_rejected() {
        for bad in [
            "cn",
            "=x",
            "cn=a,",
            "cn=a;dc=x",
            "cn=a\\zz",
            "cn=a\\",
            "c n=a",
            "cn=#abc",
            "cn=#zz",
            "1cn=x",
            "cn=a<b",
        ] {
            assert!(Dn::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Dn::parse("").unwrap().is_empty());
        assert!(Dn::parse("2.5.4.3=x,dc=y").is_ok());
        assert!(Dn::parse("cn=#04024869,dc=y").is_ok());
    }

    #[test]
    fn within_base() {
        let base = Dn::parse("ou=people,dc=corp,dc=example").unwrap();
        assert!(Dn::parse("uid=a,OU=People,dc=corp,dc=example")
            .unwrap()
            .is_within(&base));
        assert!(!Dn::parse("uid=a,ou=groups,dc=corp,dc=example")
            .unwrap()
            .is_within(&base));
    }

    #[test]
    fn attribute_names() {
        assert!(is_attribute_name("mail"));
        assert!(is_attribute_name("memberOf"));
        assert!(is_attribute_name("2.5.4.3"));
        assert!(!is_attribute_name("mail)(x"));
        assert!(!is_attribute_name(""));
        assert!(!is_attribute_name("1abc"));
    }
}
