//! PATCH (RFC 7644 §3.5.2) on a user's [`Attrs`], including the dialects Entra ID and Okta send:
//!
//! - `op` is matched without regard to case (`Add`, `REPLACE`); anything other than
//!   add/remove/replace is 400 `invalidSyntax`.
//! - Without `path`, `add`/`replace` take an object whose keys are attribute paths: plain names,
//!   dotted sub-attributes (`name.givenName`), URN-qualified extension attributes
//!   (`urn:…:enterprise:2.0:User:employeeNumber`) or the extension URN itself with an object.
//!   Keys are never stored literally. `remove` without `path` is 400 `noTarget`.
//! - Value-filter paths (`emails[type eq "work"].value`): `add` **and `replace`** with no
//!   matching value create one from the filter's `eq` terms (`{"type": "work", "value": …}`),
//!   as Entra ID and Okta expect — RFC 7644 §3.5.2.3 literally asks for 400 `noTarget` on a
//!   `replace`, which makes Entra fail the whole update. A filter that does not describe a value
//!   (anything but `eq` terms joined by `and`) with no match is still 400 `noTarget`.
//! - Values are converted to the schema type: only Boolean attributes take `"True"`/`"False"`
//!   strings; a bare string for a complex attribute with a `value` sub-attribute (Entra's
//!   `manager`) means `{"value": …}`.
//! - Setting `primary: true` on one value sets it false on the others (§3.5.2).
//!
//! The request is atomic: operations apply to a copy, and any failure fails the whole request.
//! Every operation either changes what it names or fails; a 200 never hides an ignored operation.

use scim_v2::filter::{AttrExp, CompValue, CompareOp, PatchPath, ValFilter};
use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{compile_val, matches};
use super::resource::{container_mut, finish, normalize, normalize_single, tidy, Attrs};
use super::schema::{schemas, AttrDef, Mutability, Resolved, SchemaKind, SchemaSet};
use super::{ENTERPRISE_USER, PATCH_OP};

/// `add`, `remove` or `replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Add values (merge into complex, append to multi-valued).
    Add,
    /// Remove the target.
    Remove,
    /// Replace the target.
    Replace,
}

/// One parsed operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The operation.
    pub kind: OpKind,
    /// Target path (`None`: the resource itself).
    pub path: Option<String>,
    /// The value, if given.
    pub value: Option<Value>,
}

fn get_ci<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Parse a PatchOp body: `schemas` must list the PatchOp URN, `Operations` must be a non-empty
/// array; keys and `op` values match without regard to case.
pub fn parse(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    let listed = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|s| s.eq_ignore_ascii_case(PATCH_OP))
        });
    if !listed {
        return Err(ScimError::invalid_syntax(format!(
            "`schemas` must list {PATCH_OP}"
        )));
    }
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("`Operations` must be an array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_value(
            "`Operations` must contain at least one operation",
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let o = op.as_object().ok_or_else(|| {
            ScimError::invalid_syntax(format!("`Operations[{i}]` must be an object"))
        })?;
        let name = get_ci(o, "op").and_then(Value::as_str).ok_or_else(|| {
            ScimError::invalid_syntax(format!("`Operations[{i}].op` is required"))
        })?;
        let kind = if name.eq_ignore_ascii_case("add") {
            OpKind::Add
        } else if name.eq_ignore_ascii_case("remove") {
            OpKind::Remove
        } else if name.eq_ignore_ascii_case("replace") {
            OpKind::Replace
        } else {
            return Err(ScimError::invalid_syntax(format!(
                "`Operations[{i}].op` `{}` is not add, remove or replace",
                crate::domain::truncate(name, 32)
            )));
        };
        let path = match get_ci(o, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ScimError::invalid_path(format!(
                    "`Operations[{i}].path` must be a string"
                )))
            }
        };
        out.push(Operation {
            kind,
            path,
            value: get_ci(o, "value").cloned(),
        });
    }
    Ok(out)
}

/// Apply all operations to a copy of `attrs`; the result satisfies
/// [`check`](super::resource::check).
pub fn apply(attrs: &Attrs, ops: &[Operation]) -> Result<Attrs, ScimError> {
    let mut a = attrs.clone();
    for op in ops {
        apply_one(&mut a, op)?;
        tidy(&mut a);
    }
    finish(&mut a)?;
    Ok(a)
}

fn apply_one(a: &mut Attrs, op: &Operation) -> Result<(), ScimError> {
    match (&op.path, op.kind) {
        (None, OpKind::Remove) => Err(ScimError::no_target(
            "`remove` needs a `path` (RFC 7644 §3.5.2.2)",
        )),
        (None, kind) => {
            let v = op
                .value
                .as_ref()
                .ok_or_else(|| ScimError::invalid_syntax("`value` is required"))?;
            let obj = v.as_object().ok_or_else(|| {
                ScimError::invalid_syntax("without `path`, `value` must be an object of attributes")
            })?;
            if obj.is_empty() {
                return Err(ScimError::invalid_value("`value` names no attribute"));
            }
            for (key, val) in obj {
                if key.eq_ignore_ascii_case("schemas") {
                    // Derived from the attributes present; never stored.
                    continue;
                }
                apply_path(a, kind, key, Some(val))?;
            }
            Ok(())
        }
        (Some(p), OpKind::Remove) => apply_path(a, OpKind::Remove, p, op.value.as_ref()),
        (Some(p), kind) => {
            let v = op.value.as_ref().ok_or_else(|| {
                ScimError::invalid_syntax("`value` is required for add and replace")
            })?;
            apply_path(a, kind, p, Some(v))
        }
    }
}

fn writable(r: &Resolved) -> Result<(), ScimError> {
    if r.attr.mutability == Mutability::ReadOnly
        || r.sub.is_some_and(|s| s.mutability == Mutability::ReadOnly)
    {
        return Err(ScimError::mutability(format!(
            "`{}` is read-only",
            r.display()
        )));
    }
    Ok(())
}

fn bad_path(p: &str) -> ScimError {
    ScimError::invalid_path(format!(
        "`{}` is not a known attribute path",
        crate::domain::truncate(p, 200)
    ))
}

fn apply_path(
    a: &mut Attrs,
    kind: OpKind,
    path: &str,
    val: Option<&Value>,
) -> Result<(), ScimError> {
    let set = schemas()?;
    let p = path.trim();
    if SchemaSet::kind_of_urn(p) == Some(SchemaKind::Enterprise) {
        if kind == OpKind::Remove {
            a.remove(ENTERPRISE_USER);
            return Ok(());
        }
        let obj = val.and_then(Value::as_object).ok_or_else(|| {
            ScimError::invalid_value(format!("`{ENTERPRISE_USER}` takes an object"))
        })?;
        for (k, v) in obj {
            if k.eq_ignore_ascii_case("schemas") {
                // Some clients serialise the extension object with its own `schemas`.
                continue;
            }
            let r = set
                .resolve(Some(ENTERPRISE_USER), k, None)
                .ok_or_else(|| bad_path(k))?;
            writable(&r)?;
            on_attr(a, kind, r, Some(v))?;
        }
        return Ok(());
    }
    let parsed: PatchPath = p.parse().map_err(|_| bad_path(p))?;
    match parsed {
        PatchPath::Attr(ap) => {
            let r = set
                .resolve(ap.uri.as_deref(), &ap.name, ap.sub_attr.as_deref())
                .ok_or_else(|| bad_path(p))?;
            writable(&r)?;
            on_attr(a, kind, r, val)
        }
        PatchPath::Value(vp) => {
            if vp.attr.sub_attr.is_some() {
                return Err(bad_path(p));
            }
            let r = set
                .resolve(vp.attr.uri.as_deref(), &vp.attr.name, None)
                .ok_or_else(|| bad_path(p))?;
            if !r.attr.multi_valued || r.attr.sub_attributes.is_empty() {
                return Err(ScimError::invalid_path(format!(
                    "`{}[…]` needs a multi-valued complex attribute",
                    r.display()
                )));
            }
            let sub = match &vp.sub_attr {
                None => None,
                Some(s) => Some(r.attr.sub(s).ok_or_else(|| bad_path(p))?),
            };
            let r = Resolved { sub, ..r };
            writable(&r)?;
            let compiled =
                compile_val(&vp.filter, r.attr).map_err(|e| ScimError::invalid_path(e.detail))?;
            on_filtered(a, kind, r, &compiled, &vp.filter, val)
        }
    }
}

fn merge_into(target: &mut Map<String, Value>, incoming: &Map<String, Value>) {
    // A new `value` without `$ref` invalidates the old reference (e.g. a new manager).
    if incoming.contains_key("value") && !incoming.contains_key("$ref") {
        target.remove("$ref");
    }
    for (k, v) in incoming {
        target.insert(k.clone(), v.clone());
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary") == Some(&Value::Bool(true))
}

/// After an operation on a multi-valued attribute: if more than one value is primary, the ones
/// this operation touched keep it and the others are set to `primary: false` (RFC 7644 §3.5.2).
fn demote_others(arr: &mut [Value], touched: &[usize]) {
    if arr.iter().filter(|v| is_primary(v)).count() <= 1 {
        return;
    }
    for (i, v) in arr.iter_mut().enumerate() {
        if !touched.contains(&i) && is_primary(v) {
            if let Some(o) = v.as_object_mut() {
                o.insert("primary".into(), Value::Bool(false));
            }
        }
    }
}

fn same_value(existing: &Value, given: &Value) -> bool {
    existing == given
        || matches!((existing.get("value"), given.get("value")), (Some(x), Some(y)) if x == y)
}

fn on_attr(a: &mut Attrs, kind: OpKind, r: Resolved, val: Option<&Value>) -> Result<(), ScimError> {
    let at = r.display();
    let name = r.attr.name.clone();
    let c = container_mut(a, r.kind)?;
    let null = Value::Null;
    let val = val.unwrap_or(&null);
    match (r.attr.multi_valued, r.sub) {
        (false, None) => {
            if kind == OpKind::Remove {
                c.remove(&name);
                return Ok(());
            }
            match normalize(r.attr, val, &at)? {
                None => {
                    c.remove(&name);
                }
                Some(Value::Object(n)) => {
                    let mut cur = c
                        .get(&name)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    merge_into(&mut cur, &n);
                    c.insert(name, Value::Object(cur));
                }
                Some(n) => {
                    c.insert(name, n);
                }
            }
        }
        (false, Some(sub)) => {
            let n = match kind {
                OpKind::Remove => None,
                _ => normalize_single(sub, val, &at)?,
            };
            let mut cur = c
                .get(&name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            match n {
                Some(n) => {
                    cur.insert(sub.name.clone(), n);
                }
                None => {
                    cur.remove(&sub.name);
                }
            }
            if cur.is_empty() {
                c.remove(&name);
            } else {
                c.insert(name, Value::Object(cur));
            }
        }
        (true, None) => match kind {
            OpKind::Remove => {
                if val.is_null() {
                    c.remove(&name);
                } else {
                    let given = normalize(r.attr, val, &at)?;
                    let given = given
                        .as_ref()
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    if let Some(Value::Array(cur)) = c.get_mut(&name) {
                        cur.retain(|e| !given.iter().any(|g| same_value(e, g)));
                        if cur.is_empty() {
                            c.remove(&name);
                        }
                    }
                }
            }
            OpKind::Replace => match normalize(r.attr, val, &at)? {
                None => {
                    c.remove(&name);
                }
                Some(n) => {
                    c.insert(name, n);
                }
            },
            OpKind::Add => {
                let Some(Value::Array(new)) = normalize(r.attr, val, &at)? else {
                    return Err(ScimError::invalid_value(format!(
                        "`add` to `{at}` needs at least one value"
                    )));
                };
                let mut cur = c
                    .get(&name)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut touched = Vec::new();
                for n in new {
                    match cur.iter().position(|e| *e == n) {
                        Some(i) => touched.push(i),
                        None => {
                            cur.push(n);
                            touched.push(cur.len() - 1);
                        }
                    }
                }
                demote_others(&mut cur, &touched);
                c.insert(name, Value::Array(cur));
            }
        },
        (true, Some(sub)) => {
            let n = match kind {
                OpKind::Remove => None,
                _ => normalize_single(sub, val, &at)?,
            };
            let mut cur = c
                .get(&name)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match n {
                Some(n) => {
                    if cur.is_empty() {
                        cur.push(Value::Object(Map::new()));
                    }
                    for e in cur.iter_mut() {
                        if let Some(o) = e.as_object_mut() {
                            o.insert(sub.name.clone(), n.clone());
                        }
                    }
                }
                None => {
                    for e in cur.iter_mut() {
                        if let Some(o) = e.as_object_mut() {
                            o.remove(&sub.name);
                        }
                    }
                    cur.retain(|e| e.as_object().is_some_and(|o| !o.is_empty()));
                }
            }
            if cur.is_empty() {
                c.remove(&name);
            } else {
                c.insert(name, Value::Array(cur));
            }
        }
    }
    Ok(())
}

/// The value a filter of only `eq` terms describes (`type eq "work"` → `{"type": "work"}`), used
/// to create the value an `add` names when none matches. `None` for any other filter.
fn eq_terms(f: &ValFilter, parent: &AttrDef) -> Option<Map<String, Value>> {
    match f {
        ValFilter::Attr(AttrExp::Comparison(p, CompareOp::Eq, v))
            if p.uri.is_none() && p.sub_attr.is_none() =>
        {
            let sub = parent.sub(&p.name)?;
            let raw = match v {
                CompValue::Str(s) => Value::String(s.clone()),
                CompValue::True => Value::Bool(true),
                CompValue::False => Value::Bool(false),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return None,
            };
            let n = normalize_single(sub, &raw, &sub.name).ok()??;
            let mut m = Map::new();
            m.insert(sub.name.clone(), n);
            Some(m)
        }
        ValFilter::And(items) => {
            let mut m = Map::new();
            for i in items.iter() {
                for (k, v) in eq_terms(i, parent)? {
                    m.insert(k, v);
                }
            }
            Some(m)
        }
        _ => None,
    }
}

fn on_filtered(
    a: &mut Attrs,
    kind: OpKind,
    r: Resolved,
    compiled: &super::filter::Compiled,
    raw: &ValFilter,
    val: Option<&Value>,
) -> Result<(), ScimError> {
    let at = r.display();
    let name = r.attr.name.clone();
    let c = container_mut(a, r.kind)?;
    let mut cur = c
        .get(&name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let hits: Vec<usize> = cur
        .iter()
        .enumerate()
        .filter(|(_, e)| e.as_object().is_some_and(|o| matches(compiled, o)))
        .map(|(i, _)| i)
        .collect();
    match kind {
        OpKind::Remove => match r.sub {
            None => {
                let mut i = 0;
                cur.retain(|_| {
                    let keep = !hits.contains(&i);
                    i += 1;
                    keep
                });
            }
            Some(sub) => {
                for &i in &hits {
                    if let Some(o) = cur.get_mut(i).and_then(Value::as_object_mut) {
                        o.remove(&sub.name);
                    }
                }
                cur.retain(|e| e.as_object().is_some_and(|o| !o.is_empty()));
            }
        },
        OpKind::Add | OpKind::Replace => {
            let null = Value::Null;
            let val = val.unwrap_or(&null);
            let incoming: Map<String, Value> = match r.sub {
                Some(sub) => {
                    let n = normalize_single(sub, val, &at)?
                        .ok_or_else(|| ScimError::invalid_value(format!("`{at}` needs a value")))?;
                    let mut m = Map::new();
                    m.insert(sub.name.clone(), n);
                    m
                }
                None => match normalize_single(r.attr, val, &at)? {
                    Some(Value::Object(m)) => m,
                    _ => {
                        return Err(ScimError::invalid_value(format!(
                            "`{at}` needs an object value"
                        )))
                    }
                },
            };
            let touched = if hits.is_empty() {
                // Entra/Okta dialect: `replace` (like `add`) of a value the user does not have
                // adds it with the filter's attributes (module doc).
                let mut base = eq_terms(raw, r.attr).ok_or_else(|| {
                    ScimError::no_target(format!(
                        "no value of `{}` matches the filter, and the filter does not describe a new one",
                        r.attr.name
                    ))
                })?;
                merge_into(&mut base, &incoming);
                cur.push(Value::Object(base));
                vec![cur.len() - 1]
            } else {
                for &i in &hits {
                    if let Some(o) = cur.get_mut(i).and_then(Value::as_object_mut) {
                        merge_into(o, &incoming);
                    }
                }
                hits
            };
            demote_others(&mut cur, &touched);
        }
    }
    if cur.is_empty() {
        c.remove(&name);
    } else {
        c.insert(name, Value::Array(cur));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::resource::from_body;
    use super::super::{ScimType, USER};
    use super::*;
    use serde_json::json;

    fn user() -> Attrs {
        from_body(&json!({
            "schemas": [USER],
            "userName": "a@example.com",
            "active": true,
            "emails": [{"value": "a@work.example", "type": "work", "primary": true}]
        }))
        .unwrap()
    }

    fn run(ops: Value) -> Result<Attrs, ScimError> {
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        apply(&user(), &parse(&body)?)
    }

    #[test]
    fn entra_dialect() {
        let a = run(json!([{"op": "Replace", "path": "active", "value": "False"}])).unwrap();
        assert_eq!(a["active"], false);
        let a = run(json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m1"}])).unwrap();
        assert_eq!(a[ENTERPRISE_USER]["manager"], json!({"value": "m1"}));
        let a = run(json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": [{"value": "m2"}]}])).unwrap();
        assert_eq!(a[ENTERPRISE_USER]["manager"], json!({"value": "m2"}));
        let e = run(json!([{"op": "replace", "path": "displayName", "value": ["a", "b"]}]))
            .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = run(json!([{"op": "REPLACE", "path": "active", "value": "yes"}])).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        let e = run(json!([{"op": "Upsert", "path": "active", "value": false}])).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        // Strings are not booleans anywhere else.
        let e = run(json!([{"op": "replace", "path": "displayName", "value": true}])).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn pathless_values() {
        let a = run(json!([{"op": "Replace", "value": {
            "displayName": "D", "name.givenName": "G", "NAME.familyName": "F",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7"}}]))
        .unwrap();
        assert_eq!(a["displayName"], "D");
        assert_eq!(a["name"], json!({"givenName": "G", "familyName": "F"}));
        assert_eq!(a[ENTERPRISE_USER]["employeeNumber"], "7");
        assert!(!a.contains_key("name.givenName"));
        let e = run(json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let e = run(json!([{"op": "replace", "value": {"nope": 1}}])).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    }

    #[test]
    fn value_filters() {
        let a = run(json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work.example"}])).unwrap();
        assert_eq!(a["emails"][0]["value"], "new@work.example");
        // Entra: `replace` of a value the user does not have adds it with the filter's
        // attributes, and the other operations of the request still apply.
        let a = run(json!([
            {"op": "Replace", "path": "emails[type eq \"home\"].value", "value": "x@home.example"},
            {"op": "Replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"},
            {"op": "Replace", "path": "displayName", "value": "D"}
        ]))
        .unwrap();
        assert_eq!(a["emails"][0]["value"], "a@work.example");
        assert_eq!(
            a["emails"][1],
            json!({"type": "home", "value": "x@home.example"})
        );
        assert_eq!(
            a["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1 555"}])
        );
        assert_eq!(a["displayName"], "D");
        // A filter that does not describe a value still has no target.
        let e =
            run(json!([{"op": "replace", "path": "emails[type ne \"work\"].value", "value": "x"}]))
                .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let e =
            run(json!([{"op": "replace", "path": "emails[value co \"zzz\"].value", "value": "x"}]))
                .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let a = run(json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@home.example"}])).unwrap();
        assert_eq!(
            a["emails"][1],
            json!({"type": "home", "value": "h@home.example"})
        );
        let a = run(
            json!([{"op": "add", "path": "emails", "value": [{"value": "p@x", "primary": true}]}]),
        )
        .unwrap();
        assert_eq!(a["emails"][0]["primary"], false);
        assert_eq!(a["emails"][1]["primary"], true);
        let a = run(json!([{"op": "remove", "path": "emails[type eq \"work\"]"}])).unwrap();
        assert!(!a.contains_key("emails"));
    }

    #[test]
    fn atomic() {
        let e = run(json!([
            {"op": "replace", "path": "displayName", "value": "X"},
            {"op": "replace", "path": "id", "value": "y"}
        ]))
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }
}
