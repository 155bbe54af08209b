//! The Avro specification's Parsing Canonical Form and its CRC-64-AVRO fingerprint, computed from the schema's JSON
//! by our own code: apache-avro 0.22 writes a logical type's primitive as `{"type":"long"}` where the
//! specification's [PRIMITIVES] rule writes `"long"`, so its fingerprints differ from every other implementation's.
//!
//! The schema is first read into a [`Node`] tree with full names resolved; the canonical form is written from the
//! tree, and the resolution checks of [`super::resolve`] walk the same tree.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// The primitive type names, which the canonical form writes as bare strings.
const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// Why some JSON is not an Avro schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The text is not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// The JSON is not a schema the specification allows.
    #[error("not an Avro schema: {0}")]
    Invalid(String),
}

/// One node of a parsed schema, with every name a full name.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A primitive type (logical types are their primitive: they do not change how data is read).
    Primitive(&'static str),
    /// A record, with its fields in order.
    Record {
        /// Its full name.
        name: String,
        /// Its aliases, as full names.
        aliases: Vec<String>,
        /// Its fields.
        fields: Vec<Field>,
    },
    /// An enum.
    Enum {
        /// Its full name.
        name: String,
        /// Its aliases, as full names.
        aliases: Vec<String>,
        /// Its symbols, in order.
        symbols: Vec<String>,
        /// The symbol a reader uses for a writer's symbol it does not have.
        default: Option<String>,
    },
    /// A fixed-size byte string.
    Fixed {
        /// Its full name.
        name: String,
        /// Its aliases, as full names.
        aliases: Vec<String>,
        /// Its size in bytes.
        size: u64,
    },
    /// An array.
    Array(Box<Node>),
    /// A map with string keys.
    Map(Box<Node>),
    /// A union of its branches.
    Union(Vec<Node>),
    /// A named type defined earlier in the schema, by full name.
    Ref(String),
}

/// A record's field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its aliases.
    pub aliases: Vec<String>,
    /// Its type.
    pub schema: Node,
    /// Whether it declares a default (a reader then fills it when the writer lacks it).
    pub has_default: bool,
}

/// A parsed schema: its root and every named type it defines, by full name.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    /// The root node.
    pub root: Node,
    /// The named types, by full name.
    pub named: HashMap<String, Node>,
}

impl ParsedSchema {
    /// Parses a schema from its JSON text.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let json: Value = serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        Self::from_json(&json)
    }

    /// Parses a schema from its JSON value.
    pub fn from_json(json: &Value) -> Result<Self, SchemaError> {
        let mut named = HashMap::new();
        let root = node(json, "", &mut named)?;
        Ok(ParsedSchema { root, named })
    }

    /// The named type a [`Node::Ref`] (or any node) stands for.
    pub fn deref<'a>(&'a self, node: &'a Node) -> &'a Node {
        match node {
            Node::Ref(name) => self.named.get(name).unwrap_or(node),
            other => other,
        }
    }

    /// The specification's Parsing Canonical Form.
    pub fn canonical_form(&self) -> String {
        let mut out = String::with_capacity(512);
        write_canonical(&self.root, &mut out);
        out
    }

    /// The CRC-64-AVRO fingerprint of the Parsing Canonical Form, as a number (a single-object header carries it
    /// little-endian).
    pub fn fingerprint(&self) -> u64 {
        crc64_avro(self.canonical_form().as_bytes())
    }
}

fn invalid(detail: impl Into<String>) -> SchemaError {
    SchemaError::Invalid(detail.into())
}

/// The full name of `name` in namespace `namespace` (a dotted name is already full).
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() { name.to_owned() } else { format!("{namespace}.{name}") }
}

fn node(json: &Value, namespace: &str, named: &mut HashMap<String, Node>) -> Result<Node, SchemaError> {
    match json {
        Value::String(name) => reference(name, namespace, named),
        Value::Array(branches) => {
            Ok(Node::Union(branches.iter().map(|b| node(b, namespace, named)).collect::<Result<_, _>>()?))
        }
        Value::Object(map) => object(map, namespace, named),
        other => Err(invalid(format!("{other} is neither a type name, a union nor a schema object"))),
    }
}

fn reference(name: &str, namespace: &str, named: &HashMap<String, Node>) -> Result<Node, SchemaError> {
    if let Some(p) = PRIMITIVES.iter().find(|p| **p == name) {
        return Ok(Node::Primitive(p));
    }
    // A short name is looked up in the enclosing namespace first, then in the null namespace, as Java does.
    let full = full_name(name, namespace);
    if named.contains_key(&full) {
        Ok(Node::Ref(full))
    } else if named.contains_key(name) {
        Ok(Node::Ref(name.to_owned()))
    } else {
        Err(invalid(format!("unknown type `{name}`")))
    }
}

fn object(map: &Map<String, Value>, namespace: &str, named: &mut HashMap<String, Node>) -> Result<Node, SchemaError> {
    let ty = map.get("type").ok_or_else(|| invalid("a schema object has no `type`"))?;
    let Value::String(ty) = ty else {
        // `{"type": {...}}` or `{"type": [...]}`: the object only wraps the schema in `type`.
        return node(ty, namespace, named);
    };
    match ty.as_str() {
        "record" | "error" | "enum" | "fixed" => named_type(ty, map, namespace, named),
        "array" => {
            let items = map.get("items").ok_or_else(|| invalid("an array has no `items`"))?;
            Ok(Node::Array(Box::new(node(items, namespace, named)?)))
        }
        "map" => {
            let values = map.get("values").ok_or_else(|| invalid("a map has no `values`"))?;
            Ok(Node::Map(Box::new(node(values, namespace, named)?)))
        }
        other => reference(other, namespace, named),
    }
}

fn string_list(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, SchemaError> {
    match map.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("`{key}` holds a non-string {v}"))))
            .collect(),
        Some(other) => Err(invalid(format!("`{key}` must be an array of strings, found {other}"))),
    }
}

fn named_type(
    ty: &str,
    map: &Map<String, Value>,
    enclosing: &str,
    named: &mut HashMap<String, Node>,
) -> Result<Node, SchemaError> {
    let name = map.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("a {ty} has no `name`")))?;
    let namespace = match map.get("namespace") {
        _ if name.contains('.') => name.rsplit_once('.').map(|(ns, _)| ns).unwrap_or_default(),
        Some(Value::String(ns)) => ns.as_str(),
        Some(Value::Null) | None => enclosing,
        Some(other) => return Err(invalid(format!("`namespace` of `{name}` must be a string, found {other}"))),
    };
    let full = full_name(name, namespace);
    if named.contains_key(&full) || PRIMITIVES.contains(&full.as_str()) {
        return Err(invalid(format!("`{full}` is defined twice")));
    }
    let aliases = string_list(map, "aliases")?.iter().map(|a| full_name(a, namespace)).collect();
    // Registered before the fields are read, so a record may refer to itself.
    named.insert(full.clone(), Node::Ref(full.clone()));
    let result = match ty {
        "enum" => {
            let symbols = string_list(map, "symbols")?;
            let default = match map.get("default") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if symbols.contains(s) => Some(s.clone()),
                Some(other) => {
                    return Err(invalid(format!("enum `{full}` has a default {other} not among its symbols")));
                }
            };
            Node::Enum { name: full.clone(), aliases, symbols, default }
        }
        "fixed" => {
            // [INTEGERS]: a size may be written quoted or with leading zeros; the canonical form has neither.
            let size = match map.get("size") {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => s.parse().ok(),
                _ => None,
            };
            let size = size.ok_or_else(|| invalid(format!("fixed `{full}` needs a non-negative integer `size`")))?;
            Node::Fixed { name: full.clone(), aliases, size }
        }
        _ => {
            let Some(Value::Array(fields)) = map.get("fields") else {
                return Err(invalid(format!("record `{full}` needs a `fields` array")));
            };
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                let fname = f.get("name").and_then(Value::as_str).ok_or_else(|| invalid("a field has no `name`"))?;
                let ftype = f.get("type").ok_or_else(|| invalid(format!("field `{fname}` has no `type`")))?;
                let aliases = f.as_object().map(|m| string_list(m, "aliases")).transpose()?.unwrap_or_default();
                out.push(Field {
                    name: fname.to_owned(),
                    aliases,
                    schema: node(ftype, namespace, named)?,
                    has_default: f.get("default").is_some(),
                });
            }
            Node::Record { name: full.clone(), aliases, fields: out }
        }
    };
    named.insert(full, result.clone());
    Ok(result)
}

/// Writes `s` as a JSON string: [STRINGS] wants no escapes but those JSON needs.
fn quoted(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string serialises"));
}

/// [PRIMITIVES], [FULLNAMES], [STRIP], [ORDER], [STRINGS], [INTEGERS] and [WHITESPACE] of the specification. A
/// named type is written in full where the tree defines it and as its full name everywhere else.
fn write_canonical(node: &Node, out: &mut String) {
    match node {
        Node::Primitive(p) => quoted(p, out),
        Node::Ref(name) => quoted(name, out),
        Node::Union(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(b, out);
            }
            out.push(']');
        }
        Node::Array(items) => {
            out.push_str(r#"{"type":"array","items":"#);
            write_canonical(items, out);
            out.push('}');
        }
        Node::Map(values) => {
            out.push_str(r#"{"type":"map","values":"#);
            write_canonical(values, out);
            out.push('}');
        }
        Node::Record { name, fields, .. } => {
            out.push_str(r#"{"name":"#);
            quoted(name, out);
            out.push_str(r#","type":"record","fields":["#);
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"name":"#);
                quoted(&f.name, out);
                out.push_str(r#","type":"#);
                write_canonical(&f.schema, out);
                out.push('}');
            }
            out.push_str("]}");
        }
        Node::Enum { name, symbols, .. } => {
            out.push_str(r#"{"name":"#);
            quoted(name, out);
            out.push_str(r#","type":"enum","symbols":["#);
            for (i, s) in symbols.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quoted(s, out);
            }
            out.push_str("]}");
        }
        Node::Fixed { name, size, .. } => {
            out.push_str(r#"{"name":"#);
            quoted(name, out);
            out.push_str(&format!(r#","type":"fixed","size":{size}}}"#));
        }
    }
}

/// The specification's CRC-64-AVRO (Rabin) fingerprint's empty value, which is also its polynomial.
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

/// The byte table of CRC-64-AVRO.
const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// The CRC-64-AVRO fingerprint of some bytes, as the specification defines it.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    bytes.iter().fold(EMPTY, |fp, &b| (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize])
}

#[cfg(test)]
mod tests;
