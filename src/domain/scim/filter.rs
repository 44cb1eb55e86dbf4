//! Filter evaluation (RFC 7644 §3.4.2.2). `scim_v2` parses the grammar (operators and keywords
//! match without regard to case, as the ABNF's quoted literals do under RFC 5234 §2.3); here a
//! parsed filter is *compiled* against the schema — every attribute resolved (names without
//! regard to case, RFC 7643 §2.1), every operator checked against the attribute's type — and then
//! evaluated on rendered resources. Anything unknown or unsupported is a 400 `invalidFilter`,
//! never a filter that silently matches everything.
//!
//! Comparison rules: strings compare without regard to case unless the attribute is
//! `caseExact` (`userName` is not, `externalId` and `id` are); `dateTime` values compare as
//! instants; `boolean` supports `eq`/`ne` only; `co`/`sw`/`ew` apply to strings and references;
//! a multi-valued attribute matches when any value matches; `ne` matches when no value equals;
//! `eq null` matches an unassigned attribute. A multi-valued complex attribute named without a
//! sub-attribute (`emails eq "…"`) compares its `value` sub-attribute.

use chrono::{DateTime, FixedOffset};
use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use serde_json::{Map, Value};

use super::error::ScimError;
use super::schema::{schemas, AttrDef, AttrType, SchemaKind};
use super::ENTERPRISE_USER;

/// Where a compiled test reads its values.
#[derive(Debug, Clone)]
enum Loc {
    /// A resource attribute: `attr` in the core object or the extension object, optionally `.sub`.
    Top {
        kind: SchemaKind,
        attr: &'static AttrDef,
        sub: Option<&'static AttrDef>,
    },
    /// A sub-attribute of one element inside a value path (`emails[type eq "work"]`).
    Elem { sub: &'static AttrDef },
}

/// A filter resolved against the schema, ready to evaluate.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// All must match.
    And(Vec<Compiled>),
    /// Any must match.
    Or(Vec<Compiled>),
    /// Negation.
    Not(Box<Compiled>),
    /// `attr pr`.
    Present(LocRef),
    /// `attr op value`.
    Compare(LocRef, Op, Operand),
    /// `attr[inner]`: some element of `attr` satisfies `inner`.
    ValuePath(LocRef, Box<Compiled>),
}

/// Opaque location of a compiled test.
#[derive(Debug, Clone)]
pub struct LocRef(Loc);

/// Comparison operators (RFC 7644 §3.4.2.2, Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater than or equal
    Ge,
    /// less than
    Lt,
    /// less than or equal
    Le,
}

/// A typed comparison value.
#[derive(Debug, Clone)]
pub enum Operand {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// Number.
    Number(f64),
    /// String compared with the attribute's case rule (already folded when not `caseExact`).
    Str(String, bool),
    /// dateTime instant.
    Time(DateTime<FixedOffset>),
}

fn op_of(op: &CompareOp) -> Op {
    match op {
        CompareOp::Eq => Op::Eq,
        CompareOp::Ne => Op::Ne,
        CompareOp::Co => Op::Co,
        CompareOp::Sw => Op::Sw,
        CompareOp::Ew => Op::Ew,
        CompareOp::Gt => Op::Gt,
        CompareOp::Ge => Op::Ge,
        CompareOp::Lt => Op::Lt,
        CompareOp::Le => Op::Le,
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Ne => "ne",
        Op::Co => "co",
        Op::Sw => "sw",
        Op::Ew => "ew",
        Op::Gt => "gt",
        Op::Ge => "ge",
        Op::Lt => "lt",
        Op::Le => "le",
    }
}

/// Fold a string for a comparison that ignores case.
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Parse an `xsd:dateTime` as used by SCIM (RFC 3339 with offset).
pub fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// Parse and compile a `filter` parameter. Syntax errors, unknown attributes and unsupported
/// operator/type combinations all give 400 `invalidFilter`.
pub fn compile_str(raw: &str) -> Result<Compiled, ScimError> {
    let f: Filter = raw.parse().map_err(|e: scim_v2::filter::ParseError| {
        ScimError::invalid_filter(format!(
            "the filter is not valid: {}",
            crate::domain::truncate(&e.to_string(), 200)
        ))
    })?;
    compile(&f)
}

/// Compile a parsed filter.
pub fn compile(f: &Filter) -> Result<Compiled, ScimError> {
    Ok(match f {
        Filter::And(items) => Compiled::And(items.iter().map(compile).collect::<Result<_, _>>()?),
        Filter::Or(items) => Compiled::Or(items.iter().map(compile).collect::<Result<_, _>>()?),
        Filter::Not(inner) => Compiled::Not(Box::new(compile(inner)?)),
        Filter::Attr(e) => compile_attr_exp(e, None)?,
        Filter::ValuePath(vp) => {
            let (kind, attr, sub) = resolve_top(&vp.attr)?;
            if sub.is_some() || attr.ty != AttrType::Complex {
                return Err(ScimError::invalid_filter(format!(
                    "`{}[…]` needs a complex attribute",
                    vp.attr
                )));
            }
            Compiled::ValuePath(
                LocRef(Loc::Top {
                    kind,
                    attr,
                    sub: None,
                }),
                Box::new(compile_val(&vp.filter, attr)?),
            )
        }
    })
}

/// Compile the filter inside `attr[…]` against the sub-attributes of `attr`.
pub fn compile_val(f: &ValFilter, parent: &'static AttrDef) -> Result<Compiled, ScimError> {
    Ok(match f {
        ValFilter::And(items) => Compiled::And(
            items
                .iter()
                .map(|i| compile_val(i, parent))
                .collect::<Result<_, _>>()?,
        ),
        ValFilter::Or(items) => Compiled::Or(
            items
                .iter()
                .map(|i| compile_val(i, parent))
                .collect::<Result<_, _>>()?,
        ),
        ValFilter::Not(inner) => Compiled::Not(Box::new(compile_val(inner, parent)?)),
        ValFilter::Attr(e) => compile_attr_exp(e, Some(parent))?,
    })
}

fn unknown(path: &AttrPath) -> ScimError {
    ScimError::invalid_filter(format!(
        "unknown or unsupported attribute `{}`",
        crate::domain::truncate(&path.to_string(), 200)
    ))
}

fn resolve_top(
    path: &AttrPath,
) -> Result<(SchemaKind, &'static AttrDef, Option<&'static AttrDef>), ScimError> {
    let set = schemas()?;
    let r = set
        .resolve(path.uri.as_deref(), &path.name, path.sub_attr.as_deref())
        .ok_or_else(|| unknown(path))?;
    Ok((r.kind, r.attr, r.sub))
}

fn compile_attr_exp(e: &AttrExp, parent: Option<&'static AttrDef>) -> Result<Compiled, ScimError> {
    let path = match e {
        AttrExp::Present(p) | AttrExp::Comparison(p, _, _) => p,
    };
    // Resolve the location and the definition the comparison applies to.
    let (loc, leaf) = match parent {
        Some(parent) => {
            if path.uri.is_some() || path.sub_attr.is_some() {
                return Err(unknown(path));
            }
            let sub = parent.sub(&path.name).ok_or_else(|| unknown(path))?;
            (Loc::Elem { sub }, sub)
        }
        None => {
            let (kind, attr, sub) = resolve_top(path)?;
            let leaf = sub.unwrap_or(attr);
            (Loc::Top { kind, attr, sub }, leaf)
        }
    };
    match e {
        AttrExp::Present(_) => Ok(Compiled::Present(LocRef(loc))),
        AttrExp::Comparison(_, op, value) => {
            // `emails eq "x"` compares `emails.value`.
            let (loc, leaf) = match (&loc, leaf.ty) {
                (
                    Loc::Top {
                        kind,
                        attr,
                        sub: None,
                    },
                    AttrType::Complex,
                ) if attr.multi_valued => match attr.sub("value") {
                    Some(v) => (
                        Loc::Top {
                            kind: *kind,
                            attr,
                            sub: Some(v),
                        },
                        v,
                    ),
                    None => return Err(unknown(path)),
                },
                (_, AttrType::Complex) => {
                    return Err(ScimError::invalid_filter(format!(
                        "`{path}` is complex: compare one of its sub-attributes"
                    )))
                }
                _ => (loc, leaf),
            };
            let op = op_of(op);
            let operand = operand(leaf, op, value, path)?;
            Ok(Compiled::Compare(LocRef(loc), op, operand))
        }
    }
}

fn operand(
    def: &AttrDef,
    op: Op,
    value: &CompValue,
    path: &AttrPath,
) -> Result<Operand, ScimError> {
    let bad = |why: &str| ScimError::invalid_filter(format!("`{path} {} …`: {why}", op_name(op)));
    if let CompValue::Null = value {
        return match op {
            Op::Eq | Op::Ne => Ok(Operand::Null),
            _ => Err(bad("null only compares with eq or ne")),
        };
    }
    let ordering = matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
    let substring = matches!(op, Op::Co | Op::Sw | Op::Ew);
    match def.ty {
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            CompValue::Str(s) => {
                if def.ty == AttrType::Binary && (ordering || substring) {
                    return Err(bad("binary attributes compare with eq or ne only"));
                }
                Ok(if def.case_exact {
                    Operand::Str(s.clone(), true)
                } else {
                    Operand::Str(fold(s), false)
                })
            }
            _ => Err(bad("this attribute takes a string")),
        },
        AttrType::Boolean => match (value, op) {
            (CompValue::True, Op::Eq | Op::Ne) => Ok(Operand::Bool(true)),
            (CompValue::False, Op::Eq | Op::Ne) => Ok(Operand::Bool(false)),
            (CompValue::True | CompValue::False, _) => {
                Err(bad("boolean attributes compare with eq or ne only"))
            }
            _ => Err(bad("this attribute takes true or false")),
        },
        AttrType::Integer | AttrType::Decimal => match value {
            CompValue::Number(n) if !substring => n
                .as_f64()
                .map(Operand::Number)
                .ok_or_else(|| bad("number out of range")),
            CompValue::Number(_) => Err(bad("numbers do not support co, sw or ew")),
            _ => Err(bad("this attribute takes a number")),
        },
        AttrType::DateTime => match value {
            CompValue::Str(s) if !substring => parse_time(s)
                .map(Operand::Time)
                .ok_or_else(|| bad("not an xsd:dateTime value")),
            CompValue::Str(_) => Err(bad("dateTime attributes do not support co, sw or ew")),
            _ => Err(bad("this attribute takes a dateTime string")),
        },
        AttrType::Complex => Err(bad("complex attributes cannot be compared")),
    }
}

fn values_at<'a>(loc: &Loc, doc: &'a Map<String, Value>) -> Vec<&'a Value> {
    let mut out = Vec::new();
    match loc {
        Loc::Top { kind, attr, sub } => {
            let container = match kind {
                SchemaKind::Core => Some(doc),
                SchemaKind::Enterprise => doc.get(ENTERPRISE_USER).and_then(Value::as_object),
            };
            let Some(v) = container.and_then(|c| c.get(&attr.name)) else {
                return out;
            };
            let elems: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for e in elems {
                match sub {
                    Some(s) => {
                        if let Some(x) = e.get(&s.name) {
                            out.push(x);
                        }
                    }
                    None => out.push(e),
                }
            }
        }
        Loc::Elem { sub } => {
            if let Some(x) = doc.get(&sub.name) {
                out.push(x);
            }
        }
    }
    out.retain(|v| !v.is_null());
    out
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(present),
        Value::Object(o) => o.values().any(present),
        _ => true,
    }
}

fn compare_one(v: &Value, op: Op, operand: &Operand) -> bool {
    use std::cmp::Ordering;
    let ord_ok = |o: Ordering| match op {
        Op::Eq => o == Ordering::Equal,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        _ => false,
    };
    match operand {
        Operand::Null => false,
        Operand::Bool(b) => v.as_bool() == Some(*b) && op == Op::Eq,
        Operand::Number(n) => v
            .as_f64()
            .and_then(|x| x.partial_cmp(n))
            .is_some_and(ord_ok),
        Operand::Time(t) => v
            .as_str()
            .and_then(parse_time)
            .is_some_and(|x| ord_ok(x.cmp(t))),
        Operand::Str(s, exact) => {
            let Some(x) = v.as_str() else { return false };
            let x = if *exact { x.to_string() } else { fold(x) };
            match op {
                Op::Co => x.contains(s.as_str()),
                Op::Sw => x.starts_with(s.as_str()),
                Op::Ew => x.ends_with(s.as_str()),
                _ => ord_ok(x.as_str().cmp(s.as_str())),
            }
        }
    }
}

/// Evaluate a compiled filter on a rendered resource (or, inside a value path, on one element).
pub fn matches(f: &Compiled, doc: &Map<String, Value>) -> bool {
    match f {
        Compiled::And(items) => items.iter().all(|i| matches(i, doc)),
        Compiled::Or(items) => items.iter().any(|i| matches(i, doc)),
        Compiled::Not(inner) => !matches(inner, doc),
        Compiled::Present(LocRef(loc)) => values_at(loc, doc).into_iter().any(present),
        Compiled::Compare(LocRef(loc), op, operand) => {
            let vals = values_at(loc, doc);
            match (op, operand) {
                (Op::Eq, Operand::Null) => !vals.into_iter().any(present),
                (Op::Ne, Operand::Null) => vals.into_iter().any(present),
                (Op::Ne, _) => !vals.into_iter().any(|v| compare_one(v, Op::Eq, operand)),
                (op, _) => vals.into_iter().any(|v| compare_one(v, *op, operand)),
            }
        }
        Compiled::ValuePath(LocRef(loc), inner) => values_at(loc, doc)
            .into_iter()
            .filter_map(Value::as_object)
            .any(|e| matches(inner, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Map<String, Value> {
        json!({
            "userName": "alice@example.com",
            "externalId": "Ext-Id-MixedCase",
            "active": true,
            "emails": [{"value": "Alice@Work.example", "type": "work"}, {"value": "a@home.example", "type": "home"}],
            "meta": {"created": "2026-01-02T03:04:05.000Z"},
            ENTERPRISE_USER: {"department": "R&D"}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn m(f: &str) -> bool {
        matches(&compile_str(f).unwrap(), &doc())
    }

    #[test]
    fn case_rules() {
        assert!(m(r#"UserName Eq "ALICE@EXAMPLE.COM""#));
        assert!(m(r#"userName eq "alice@example.com" AND active eq true"#));
        assert!(!m(r#"externalId eq "ext-id-mixedcase""#));
        assert!(m(r#"externalId eq "Ext-Id-MixedCase""#));
        assert!(m(r#"EMAILS.VALUE eq "alice@work.example""#));
        assert!(m(r#"emails[type eq "work" and value sw "alice"]"#));
        assert!(!m(r#"emails[type eq "other"]"#));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "r&d""#
        ));
        assert!(m(r#"meta.created gt "2026-01-01T00:00:00Z""#));
        assert!(m(
            r#"not (title pr) and (userName co "@" or active eq false)"#
        ));
        assert!(m(r#"title eq null"#));
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        for f in [
            r#"title xx "a""#,
            r#"userName eq "a" and ("#,
            r#"nonExistentAttr eq "a""#,
            r#"active gt true"#,
            r#"name eq "x""#,
            r#"meta.created co "2026""#,
            r#"userName eq 1"#,
        ] {
            let e = compile_str(f).unwrap_err();
            assert_eq!(e.status, 400, "{f}");
            assert_eq!(
                e.scim_type,
                Some(super::super::ScimType::InvalidFilter),
                "{f}"
            );
        }
    }
}
