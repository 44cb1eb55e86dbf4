//! The attribute definitions this server serves and enforces (RFC 7643 §7): the core User schema
//! (§4.1) without `password` (we never take passwords over SCIM) and `groups` (no Group
//! resources), the Enterprise User extension (§4.3), and the common attributes `id`,
//! `externalId` and `meta` (§3.1). The definitions come from the `scim_v2` crate's copies of the
//! RFC 7643 §8.7.1 schema representations, so what `/Schemas` publishes is exactly what the
//! PATCH engine, the filter evaluator and the input checks obey.

use std::sync::OnceLock;

use scim_v2::models::scim_schema::{get_schemas, Attributes, SubAttributes};
use serde_json::Value;

use super::error::ScimError;
use super::{ENTERPRISE_USER, USER};

/// Core User attributes this server does not serve (see the module docs).
const UNSUPPORTED_CORE: [&str; 2] = ["password", "groups"];

/// RFC 7643 §2.3 data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// JSON string.
    String,
    /// JSON `true`/`false` (Entra's `"True"`/`"False"` strings are converted on input).
    Boolean,
    /// JSON number.
    Decimal,
    /// JSON number without fraction.
    Integer,
    /// `xsd:dateTime` string (RFC 3339 profile).
    DateTime,
    /// Base64 string (RFC 4648 §4).
    Binary,
    /// URI string.
    Reference,
    /// Object of sub-attributes.
    Complex,
}

impl AttrType {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "string" => AttrType::String,
            "boolean" => AttrType::Boolean,
            "decimal" => AttrType::Decimal,
            "integer" => AttrType::Integer,
            "dateTime" => AttrType::DateTime,
            "binary" => AttrType::Binary,
            "reference" => AttrType::Reference,
            "complex" => AttrType::Complex,
            other => return Err(format!("unknown attribute type `{other}`")),
        })
    }
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the service provider only.
    ReadOnly,
    /// Writable.
    ReadWrite,
    /// Writable once.
    Immutable,
    /// Writable, never returned.
    WriteOnly,
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always returned, even when not requested.
    Always,
    /// Never returned.
    Never,
    /// Returned unless excluded.
    Default,
    /// Returned only when requested.
    Request,
}

/// One attribute (or sub-attribute) definition.
#[derive(Debug, Clone)]
pub struct AttrDef {
    /// Canonical name (e.g. `userName`).
    pub name: String,
    /// Data type.
    pub ty: AttrType,
    /// Multi-valued (a JSON array).
    pub multi_valued: bool,
    /// Required on create/replace.
    pub required: bool,
    /// Whether string comparison respects case (RFC 7643 §2.3.1, §7).
    pub case_exact: bool,
    /// Who may write it.
    pub mutability: Mutability,
    /// When it is returned.
    pub returned: Returned,
    /// Sub-attributes of a complex attribute.
    pub sub_attributes: Vec<AttrDef>,
}

impl AttrDef {
    /// The sub-attribute `name`, matched without regard to case (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&AttrDef> {
        self.sub_attributes
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    fn simple(name: &str, ty: AttrType, case_exact: bool, mutability: Mutability) -> Self {
        Self {
            name: name.into(),
            ty,
            multi_valued: false,
            required: false,
            case_exact,
            mutability,
            returned: Returned::Default,
            sub_attributes: Vec::new(),
        }
    }
}

fn mutability(s: Option<&str>) -> Mutability {
    match s {
        Some("readOnly") => Mutability::ReadOnly,
        Some("immutable") => Mutability::Immutable,
        Some("writeOnly") => Mutability::WriteOnly,
        _ => Mutability::ReadWrite,
    }
}

fn returned(s: Option<&str>) -> Returned {
    match s {
        Some("always") => Returned::Always,
        Some("never") => Returned::Never,
        Some("request") => Returned::Request,
        _ => Returned::Default,
    }
}

fn from_sub(a: &SubAttributes) -> Result<AttrDef, String> {
    Ok(AttrDef {
        name: a.name.clone(),
        ty: AttrType::parse(&a.r#type)?,
        multi_valued: a.multi_valued,
        required: a.required.unwrap_or(false),
        case_exact: a.case_exact.unwrap_or(false),
        mutability: mutability(a.mutability.as_deref()),
        returned: returned(a.returned.as_deref()),
        sub_attributes: Vec::new(),
    })
}

fn from_attr(a: &Attributes) -> Result<AttrDef, String> {
    let subs = match a.sub_attributes.as_option() {
        Some(v) => v.iter().map(from_sub).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(AttrDef {
        name: a.name.clone(),
        ty: AttrType::parse(&a.r#type)?,
        multi_valued: a.multi_valued,
        required: a.required.unwrap_or(false),
        case_exact: a.case_exact.unwrap_or(false),
        mutability: mutability(a.mutability.as_deref()),
        returned: returned(a.returned.as_deref()),
        sub_attributes: subs,
    })
}

/// Which schema an attribute belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `urn:ietf:params:scim:schemas:core:2.0:User` and the common attributes.
    Core,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    Enterprise,
}

/// An attribute path resolved against the schemas.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// Schema of the attribute.
    pub kind: SchemaKind,
    /// The top-level attribute.
    pub attr: &'static AttrDef,
    /// The sub-attribute, when the path names one.
    pub sub: Option<&'static AttrDef>,
}

impl Resolved {
    /// The definition the path ends at.
    pub fn leaf(&self) -> &'static AttrDef {
        self.sub.unwrap_or(self.attr)
    }
    /// The canonical path (`name.givenName`, `urn:…:User:manager.value`).
    pub fn display(&self) -> String {
        let base = match self.kind {
            SchemaKind::Core => self.attr.name.clone(),
            SchemaKind::Enterprise => format!("{ENTERPRISE_USER}:{}", self.attr.name),
        };
        match self.sub {
            Some(s) => format!("{base}.{}", s.name),
            None => base,
        }
    }
}

/// The served schemas and the definitions derived from them.
#[derive(Debug)]
pub struct SchemaSet {
    /// Core User attributes plus `id`, `externalId`, `meta`.
    pub core: Vec<AttrDef>,
    /// Enterprise extension attributes.
    pub enterprise: Vec<AttrDef>,
    /// Schema representations served by `/Schemas` (without `meta`; the HTTP layer adds it).
    pub served: Vec<Value>,
}

const META_SCHEMAS: [&str; 3] = [
    include_str!("schemas/resource_type.json"),
    include_str!("schemas/service_provider_config.json"),
    include_str!("schemas/scim_schema.json"),
];

fn build() -> Result<SchemaSet, String> {
    let mut found = get_schemas(vec!["user", "enterprise_user"]).map_err(|e| e.to_string())?;
    let mut ent = found.pop().ok_or("enterprise schema missing")?;
    let mut user = found.pop().ok_or("user schema missing")?;
    user.attributes
        .retain(|a| !UNSUPPORTED_CORE.contains(&a.name.as_str()));
    let mut core = user
        .attributes
        .iter()
        .map(from_attr)
        .collect::<Result<Vec<_>, _>>()?;
    let enterprise = ent
        .attributes
        .iter()
        .map(from_attr)
        .collect::<Result<Vec<_>, _>>()?;
    // RFC 7643 §3.1 common attributes.
    let mut id = AttrDef::simple("id", AttrType::String, true, Mutability::ReadOnly);
    id.returned = Returned::Always;
    core.push(id);
    core.push(AttrDef::simple(
        "externalId",
        AttrType::String,
        true,
        Mutability::ReadWrite,
    ));
    let ro = Mutability::ReadOnly;
    core.push(AttrDef {
        name: "meta".into(),
        ty: AttrType::Complex,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: ro,
        returned: Returned::Default,
        sub_attributes: vec![
            AttrDef::simple("resourceType", AttrType::String, true, ro),
            AttrDef::simple("created", AttrType::DateTime, false, ro),
            AttrDef::simple("lastModified", AttrType::DateTime, false, ro),
            AttrDef::simple("location", AttrType::Reference, true, ro),
            AttrDef::simple("version", AttrType::String, true, ro),
        ],
    });
    let mut served = Vec::new();
    for s in [&mut user, &mut ent] {
        s.schemas = vec![scim_v2::schema_urns::SCHEMA.to_string()];
        let mut v = serde_json::to_value(&*s).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object_mut() {
            o.remove("meta");
        }
        served.push(v);
    }
    for raw in META_SCHEMAS {
        let mut v: Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "schemas".into(),
                serde_json::json!([scim_v2::schema_urns::SCHEMA]),
            );
        }
        served.push(v);
    }
    Ok(SchemaSet {
        core,
        enterprise,
        served,
    })
}

/// The schema set, built once from the embedded RFC definitions (immutable afterwards).
pub fn schemas() -> Result<&'static SchemaSet, ScimError> {
    static SET: OnceLock<Result<SchemaSet, String>> = OnceLock::new();
    match SET.get_or_init(build) {
        Ok(s) => Ok(s),
        Err(e) => {
            tracing::error!(error = %e, "SCIM schema definitions unusable");
            Err(ScimError::internal())
        }
    }
}

impl SchemaSet {
    /// Attributes of one schema.
    pub fn attrs(&self, kind: SchemaKind) -> &[AttrDef] {
        match kind {
            SchemaKind::Core => &self.core,
            SchemaKind::Enterprise => &self.enterprise,
        }
    }

    /// Which schema a URN prefix names (compared without regard to case); `None` for others.
    pub fn kind_of_urn(urn: &str) -> Option<SchemaKind> {
        if urn.eq_ignore_ascii_case(USER) {
            Some(SchemaKind::Core)
        } else if urn.eq_ignore_ascii_case(ENTERPRISE_USER) {
            Some(SchemaKind::Enterprise)
        } else {
            None
        }
    }

    /// Resolve `[uri:]name[.sub]`, names compared without regard to case (RFC 7643 §2.1).
    /// Without a URI the core schema is meant (RFC 7644 §3.10). `None` if anything is unknown.
    pub fn resolve(
        &'static self,
        uri: Option<&str>,
        name: &str,
        sub: Option<&str>,
    ) -> Option<Resolved> {
        let kind = match uri {
            None => SchemaKind::Core,
            Some(u) => Self::kind_of_urn(u)?,
        };
        let attr = self
            .attrs(kind)
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))?;
        let sub = match sub {
            None => None,
            Some(s) => Some(attr.sub(s)?),
        };
        Some(Resolved { kind, attr, sub })
    }
}
