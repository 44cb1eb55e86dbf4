//! The User resource: input checks and normalisation (RFC 7643 §2, §4), rendering with `meta`
//! (§3.1) and the `attributes`/`excludedAttributes` projection (RFC 7644 §3.9).
//!
//! Internally a user's SCIM attributes are an [`Attrs`] map: core attributes by canonical name at
//! the top level, the Enterprise User extension as an object under its URN. It never holds `id`,
//! `meta` or `schemas`, never holds `null` or empty values (RFC 7643 §2.5: unassigned), and every
//! value has its schema type (so `"True"` became `true`).

use base64::Engine;
use scim_v2::filter::{AttrExp, Filter};
use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::filter::parse_time;
use super::schema::{
    schemas, AttrDef, AttrType, Mutability, Resolved, Returned, SchemaKind, SchemaSet,
};
use super::{ENTERPRISE_USER, USER};

/// A user's SCIM attributes in canonical form (see the module docs).
pub type Attrs = Map<String, Value>;

/// Longest accepted `userName` (it is also the login name, stored in the `email` column).
pub const MAX_USER_NAME: usize = 254;

/// Read-only or unsupported core attributes that clients may send and that are ignored on
/// create and replace (RFC 7644 §3.3, §3.5.1: readOnly values "SHALL be ignored").
const IGNORED_ON_INPUT: [&str; 3] = ["id", "meta", "groups"];

fn at_most(s: &str, n: usize) -> String {
    crate::domain::truncate(s, n)
}

/// Convert one scalar to the attribute's type. Booleans also accept the strings `"true"` and
/// `"false"` in any case (Entra ID), and nothing else.
fn scalar(def: &AttrDef, v: &Value, at: &str) -> Result<Value, ScimError> {
    let bad = |what: &str| ScimError::invalid_value(format!("`{at}` must be {what}"));
    match def.ty {
        AttrType::String | AttrType::Reference => match v {
            Value::String(_) => Ok(v.clone()),
            _ => Err(bad("a string")),
        },
        AttrType::Binary => match v.as_str() {
            Some(s) if base64::engine::general_purpose::STANDARD.decode(s).is_ok() => Ok(v.clone()),
            _ => Err(bad("a base64 string")),
        },
        AttrType::DateTime => match v.as_str() {
            Some(s) if parse_time(s).is_some() => Ok(v.clone()),
            _ => Err(bad("an xsd:dateTime string")),
        },
        AttrType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(bad("true or false")),
        },
        AttrType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            _ => Err(bad("an integer")),
        },
        AttrType::Decimal => match v {
            Value::Number(_) => Ok(v.clone()),
            _ => Err(bad("a number")),
        },
        AttrType::Complex => Err(bad("an object")),
    }
}

/// Normalise one value of `def` (a single value even when `def` is multi-valued). `None` means
/// unassigned. A bare scalar given for a complex attribute that has a `value` sub-attribute is
/// read as `{"value": …}` (Entra sends the enterprise `manager` as a bare id). Read-only
/// sub-attributes are dropped (RFC 7644 §3.3).
pub fn normalize_single(def: &AttrDef, v: &Value, at: &str) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    if def.ty != AttrType::Complex {
        return scalar(def, v, at).map(Some);
    }
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, x) in o {
                let Some(s) = def.sub(k) else {
                    return Err(ScimError::invalid_value(format!(
                        "`{at}` has no sub-attribute `{}`",
                        at_most(k, 64)
                    )));
                };
                if s.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(n) = normalize_single(s, x, &format!("{at}.{}", s.name))? {
                    out.insert(s.name.clone(), n);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Value::Array(_) => Err(ScimError::invalid_value(format!(
            "`{at}` takes a single value"
        ))),
        other => {
            match def.sub("value") {
                Some(vd) => Ok(normalize_single(vd, other, &format!("{at}.value"))?
                    .map(|n| json!({ "value": n }))),
                None => Err(ScimError::invalid_value(format!(
                    "`{at}` must be an object"
                ))),
            }
        }
    }
}

/// Normalise a whole attribute value. Multi-valued attributes accept an array or one value;
/// single-valued ones accept one value, or an array of at most one (`[]` clears).
pub fn normalize(def: &AttrDef, v: &Value, at: &str) -> Result<Option<Value>, ScimError> {
    if !def.multi_valued {
        return match v {
            Value::Array(a) if a.is_empty() => Ok(None),
            Value::Array(a) if a.len() == 1 => normalize_single(def, &a[0], at),
            _ => normalize_single(def, v, at),
        };
    }
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for it in items {
        if let Some(n) = normalize_single(def, it, at)? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// The object holding attributes of `kind` (the extension object is created on demand).
pub fn container_mut(attrs: &mut Attrs, kind: SchemaKind) -> Result<&mut Attrs, ScimError> {
    match kind {
        SchemaKind::Core => Ok(attrs),
        SchemaKind::Enterprise => {
            let e = attrs
                .entry(ENTERPRISE_USER.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                *e = Value::Object(Map::new());
            }
            e.as_object_mut().ok_or_else(ScimError::internal)
        }
    }
}

/// Drop an empty extension object.
pub fn tidy(attrs: &mut Attrs) {
    if attrs
        .get(ENTERPRISE_USER)
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        attrs.remove(ENTERPRISE_USER);
    }
}

/// Rules every stored resource obeys: `userName` present (1–254 characters, no control
/// characters, not only spaces), at most one `primary: true` per multi-valued attribute
/// (RFC 7643 §2.4).
pub fn check(attrs: &Attrs) -> Result<(), ScimError> {
    match attrs.get("userName").and_then(Value::as_str) {
        Some(u)
            if !u.trim().is_empty()
                && u.chars().count() <= MAX_USER_NAME
                && !u.chars().any(char::is_control) => {}
        Some(_) => {
            return Err(ScimError::invalid_value(
                "`userName` must be 1-254 printable characters",
            ))
        }
        None => return Err(ScimError::invalid_value("`userName` is required")),
    }
    let set = schemas()?;
    for kind in [SchemaKind::Core, SchemaKind::Enterprise] {
        let container = match kind {
            SchemaKind::Core => Some(attrs),
            SchemaKind::Enterprise => attrs.get(ENTERPRISE_USER).and_then(Value::as_object),
        };
        let Some(c) = container else { continue };
        for def in set.attrs(kind).iter().filter(|d| d.multi_valued) {
            let primaries = c
                .get(&def.name)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|e| e.get("primary") == Some(&Value::Bool(true)))
                        .count()
                })
                .unwrap_or(0);
            if primaries > 1 {
                return Err(ScimError::invalid_value(format!(
                    "`{}` has more than one primary value",
                    def.name
                )));
            }
        }
    }
    Ok(())
}

/// Final form of a resource after input or PATCH: `userName` trimmed, empty extension dropped,
/// then [`check`]ed.
pub fn finish(attrs: &mut Attrs) -> Result<(), ScimError> {
    if let Some(Value::String(u)) = attrs.get_mut("userName") {
        let t = u.trim();
        if t.len() != u.len() {
            *u = t.to_string();
        }
    }
    tidy(attrs);
    check(attrs)
}

/// Split `urn:…:User:userName` into (`urn:…:User`, `userName`); plain names pass through.
pub fn split_urn(key: &str) -> (Option<&str>, &str) {
    if key.len() > 4 && key[..4].eq_ignore_ascii_case("urn:") {
        if let Some((u, n)) = key.rsplit_once(':') {
            return (Some(u), n);
        }
    }
    (None, key)
}

fn unknown_attr(k: &str) -> ScimError {
    if k.eq_ignore_ascii_case("password") {
        return ScimError::invalid_value(
            "`password` is not accepted over SCIM: provisioned users sign in through the directory",
        );
    }
    ScimError::invalid_value(format!(
        "unknown attribute `{}` (see /scim/v2/Schemas)",
        at_most(k, 120)
    ))
}

/// Parse a POST or PUT body into [`Attrs`] (RFC 7644 §3.3, §3.5.1). `schemas` must list the core
/// User URN; read-only attributes (`id`, `meta`, `groups`) are ignored; unknown attributes and
/// `password` are refused with 400 `invalidValue`; attribute names match without regard to case.
pub fn from_body(body: &Value) -> Result<Attrs, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    let listed = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("schemas"))
        .and_then(|(_, v)| v.as_array())
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|s| s.eq_ignore_ascii_case(USER))
        });
    if !listed {
        return Err(ScimError::invalid_syntax(format!(
            "`schemas` must list {USER}"
        )));
    }
    let set = schemas()?;
    let mut out = Attrs::new();
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if SchemaSet::kind_of_urn(k) == Some(SchemaKind::Enterprise) {
            let inner = match v {
                Value::Object(o) => o,
                Value::Null => continue,
                _ => {
                    return Err(ScimError::invalid_value(format!(
                        "`{ENTERPRISE_USER}` must be an object"
                    )))
                }
            };
            for (k2, v2) in inner {
                if k2.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let r = set
                    .resolve(Some(ENTERPRISE_USER), k2, None)
                    .ok_or_else(|| unknown_attr(k2))?;
                put(&mut out, r, v2)?;
            }
            continue;
        }
        let (uri, name) = split_urn(k);
        let core = uri.is_none_or(|u| u.eq_ignore_ascii_case(USER));
        if core
            && IGNORED_ON_INPUT
                .iter()
                .any(|i| i.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let r = set
            .resolve(uri, name, None)
            .ok_or_else(|| unknown_attr(k))?;
        if r.attr.mutability == Mutability::ReadOnly {
            continue;
        }
        put(&mut out, r, v)?;
    }
    finish(&mut out)?;
    Ok(out)
}

fn put(out: &mut Attrs, r: Resolved, v: &Value) -> Result<(), ScimError> {
    let n = normalize(r.attr, v, &r.display())?;
    let c = container_mut(out, r.kind)?;
    match n {
        Some(n) => {
            c.insert(r.attr.name.clone(), n);
        }
        None => {
            c.remove(&r.attr.name);
        }
    }
    tidy(out);
    Ok(())
}

/// Server-assigned facts rendered into `id` and `meta`.
#[derive(Debug, Clone)]
pub struct MetaInfo {
    /// Resource id.
    pub id: String,
    /// `meta.created` (RFC 3339).
    pub created: String,
    /// `meta.lastModified` (RFC 3339).
    pub last_modified: String,
    /// Version counter; rendered as the weak ETag `W/"<n>"`.
    pub version: i64,
}

/// The ETag of a version: `W/"<n>"` (RFC 7644 §3.14, RFC 9110 §8.8.3).
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Render the full resource: `schemas` (the core URN, plus the extension URN when the user has
/// extension attributes), `id`, the attributes, and `meta` with `location` under `base`
/// (`https://<host>/scim/v2`). An enterprise `manager` without `$ref` gets
/// `<base>/Users/<manager.value>`.
pub fn render(attrs: &Attrs, m: &MetaInfo, base: &str) -> Map<String, Value> {
    let mut out = attrs.clone();
    let mut schemas = vec![Value::String(USER.into())];
    if let Some(Value::Object(ext)) = out.get_mut(ENTERPRISE_USER) {
        schemas.push(Value::String(ENTERPRISE_USER.into()));
        if let Some(Value::Object(mgr)) = ext.get_mut("manager") {
            if !mgr.contains_key("$ref") {
                if let Some(id) = mgr.get("value").and_then(Value::as_str) {
                    let r = format!("{base}/Users/{id}");
                    mgr.insert("$ref".into(), Value::String(r));
                }
            }
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(m.id.clone()));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": m.created,
            "lastModified": m.last_modified,
            "version": etag(m.version),
            "location": format!("{base}/Users/{}", m.id),
        }),
    );
    out
}

/// One entry of `attributes`/`excludedAttributes`.
#[derive(Debug, Clone, Copy)]
pub enum Selected {
    /// An attribute or sub-attribute.
    Attr(Resolved),
    /// The whole Enterprise User extension.
    Extension,
}

/// Parse a comma-separated `attributes`/`excludedAttributes` list (RFC 7644 §3.9, §3.10
/// notation; names without regard to case). An unknown name is a 400 `invalidValue`.
pub fn parse_selection<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Selected>, ScimError> {
    let set = schemas()?;
    let mut out = Vec::new();
    for raw in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        if SchemaSet::kind_of_urn(raw) == Some(SchemaKind::Enterprise) {
            out.push(Selected::Extension);
            continue;
        }
        let bad = || {
            ScimError::invalid_value(format!(
                "unknown attribute `{}` in attributes/excludedAttributes",
                at_most(raw, 120)
            ))
        };
        let f: Filter = format!("{raw} pr").parse().map_err(|_| bad())?;
        let Filter::Attr(AttrExp::Present(p)) = f else {
            return Err(bad());
        };
        let r = set
            .resolve(p.uri.as_deref(), &p.name, p.sub_attr.as_deref())
            .ok_or_else(bad)?;
        out.push(Selected::Attr(r));
    }
    Ok(out)
}

fn keep_subs(v: &Value, subs: &[&str]) -> Option<Value> {
    let pick = |o: &Map<String, Value>| -> Option<Value> {
        let m: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| subs.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!m.is_empty()).then_some(Value::Object(m))
    };
    match v {
        Value::Object(o) => pick(o),
        Value::Array(a) => {
            let items: Vec<Value> = a
                .iter()
                .filter_map(|e| e.as_object().and_then(pick))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        _ => None,
    }
}

/// Apply `attributes` (keep only these plus `schemas` and the `returned: always` `id`) or
/// `excludedAttributes` (drop these, never `id`/`schemas`) to a rendered resource.
pub fn project(
    doc: Map<String, Value>,
    include: &[Selected],
    exclude: &[Selected],
) -> Map<String, Value> {
    if !include.is_empty() {
        let mut out = Map::new();
        for k in ["schemas", "id"] {
            if let Some(v) = doc.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
        // Group the selection per attribute: whole attribute, or a set of sub-attributes.
        let mut wanted: Vec<(SchemaKind, &str, Option<Vec<&str>>)> = Vec::new();
        let mut whole_ext = false;
        for s in include {
            match s {
                Selected::Extension => whole_ext = true,
                Selected::Attr(r) => {
                    let name = r.attr.name.as_str();
                    let pos = wanted
                        .iter()
                        .position(|(k, n, _)| *k == r.kind && *n == name);
                    match (pos, r.sub) {
                        (None, None) => wanted.push((r.kind, name, None)),
                        (None, Some(sub)) => {
                            wanted.push((r.kind, name, Some(vec![sub.name.as_str()])))
                        }
                        (Some(i), None) => wanted[i].2 = None,
                        (Some(i), Some(sub)) => {
                            if let Some(subs) = wanted[i].2.as_mut() {
                                subs.push(sub.name.as_str());
                            }
                        }
                    }
                }
            }
        }
        if whole_ext {
            if let Some(v) = doc.get(ENTERPRISE_USER) {
                out.insert(ENTERPRISE_USER.into(), v.clone());
            }
        }
        for (kind, name, subs) in wanted {
            let src = match kind {
                SchemaKind::Core => Some(&doc),
                SchemaKind::Enterprise => doc.get(ENTERPRISE_USER).and_then(Value::as_object),
            };
            let Some(v) = src.and_then(|s| s.get(name)) else {
                continue;
            };
            let picked = match &subs {
                None => Some(v.clone()),
                Some(subs) => keep_subs(v, subs),
            };
            if let Some(p) = picked {
                if kind == SchemaKind::Enterprise && whole_ext {
                    continue;
                }
                if let Ok(c) = container_mut(&mut out, kind) {
                    c.insert(name.to_string(), p);
                }
            }
        }
        return out;
    }
    let mut doc = doc;
    for s in exclude {
        match s {
            Selected::Extension => {
                doc.remove(ENTERPRISE_USER);
            }
            Selected::Attr(r) => {
                if r.attr.returned == Returned::Always || r.leaf().returned == Returned::Always {
                    continue;
                }
                let Ok(c) = container_mut(&mut doc, r.kind) else {
                    continue;
                };
                match r.sub {
                    None => {
                        c.remove(&r.attr.name);
                    }
                    Some(sub) => {
                        let drop_it = match c.get_mut(&r.attr.name) {
                            Some(Value::Object(o)) => {
                                o.remove(&sub.name);
                                o.is_empty()
                            }
                            Some(Value::Array(a)) => {
                                for e in a.iter_mut() {
                                    if let Some(o) = e.as_object_mut() {
                                        o.remove(&sub.name);
                                    }
                                }
                                a.retain(|e| e.as_object().is_none_or(|o| !o.is_empty()));
                                a.is_empty()
                            }
                            _ => false,
                        };
                        if drop_it {
                            c.remove(&r.attr.name);
                        }
                    }
                }
                tidy(&mut doc);
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_normalised() {
        let a = from_body(&json!({
            "schemas": [USER],
            "UserName": "Bob@Example.com",
            "ACTIVE": "False",
            "name": {"GivenName": "Bob"},
            "emails": {"value": "bob@example.com", "type": "work"},
            "groups": [{"value": "x"}],
            ENTERPRISE_USER: {"manager": "m-1", "department": "Ops"}
        }))
        .unwrap();
        assert_eq!(a["userName"], "Bob@Example.com");
        assert_eq!(a["active"], false);
        assert_eq!(a["name"], json!({"givenName": "Bob"}));
        assert_eq!(
            a["emails"],
            json!([{"value": "bob@example.com", "type": "work"}])
        );
        assert_eq!(a[ENTERPRISE_USER]["manager"], json!({"value": "m-1"}));
        assert!(!a.contains_key("groups"));
    }

    #[test]
    fn body_refusals() {
        for b in [
            json!({"userName": "a"}),
            json!({"schemas": [USER]}),
            json!({"schemas": [USER], "userName": "a", "active": "yes"}),
            json!({"schemas": [USER], "userName": "a", "password": "x"}),
            json!({"schemas": [USER], "userName": "a", "shoeSize": 4}),
            json!({"schemas": [USER], "userName": "a", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}),
        ] {
            assert_eq!(from_body(&b).unwrap_err().status, 400, "{b}");
        }
    }

    #[test]
    fn projection() {
        let a = from_body(&json!({"schemas": [USER], "userName": "a", "name": {"givenName": "G", "familyName": "F"}, "emails": [{"value": "e", "type": "work"}]})).unwrap();
        let m = MetaInfo {
            id: "1".into(),
            created: "2026-01-01T00:00:00Z".into(),
            last_modified: "2026-01-01T00:00:00Z".into(),
            version: 1,
        };
        let doc = render(&a, &m, "https://h/scim/v2");
        let inc = parse_selection(["name.givenName", "EMAILS.value"]).unwrap();
        let p = project(doc.clone(), &inc, &[]);
        assert_eq!(p["name"], json!({"givenName": "G"}));
        assert_eq!(p["emails"], json!([{"value": "e"}]));
        assert!(p.contains_key("id") && !p.contains_key("userName") && !p.contains_key("meta"));
        let exc = parse_selection(["name", "id"]).unwrap();
        let p = project(doc, &[], &exc);
        assert!(!p.contains_key("name") && p.contains_key("id") && p.contains_key("userName"));
    }
}
