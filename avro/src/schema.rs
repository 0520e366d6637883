//! Avro schemas: `.avsc` JSON parsed into [`Schema`], with hard bounds (text size, nesting
//! depth), the types a platform schema can use, and field defaults checked against their
//! types when the schema is parsed (never at decode time).
//!
//! Supported: every primitive, records, enums, arrays, maps, unions, fixed; named-type
//! references to earlier definitions; field defaults. Logical types are read as their
//! underlying type. Refused when the schema is parsed: recursive types, aliases, a union
//! inside a union, repeated field names, defaults that do not fit.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use thiserror::Error;

/// Longest schema text accepted, in bytes.
pub const SCHEMA_BYTES_MAX: usize = 256 * 1024;
/// Deepest nesting of a schema.
pub const DEPTH_MAX: usize = 32;
/// Types (nodes of the parsed tree, references to named types expanded) a schema may hold:
/// without it, a few references nested a few levels deep expand exponentially.
pub const NODES_MAX: usize = 10_000;

/// Why a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The text is not JSON.
    #[error("schema is not JSON: {0}")]
    Json(String),
    /// The text is longer than [`SCHEMA_BYTES_MAX`].
    #[error("schema of {len} bytes is larger than {max} bytes")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`DEPTH_MAX`].
    #[error("schema nests deeper than {0} levels")]
    TooDeep(usize),
    /// More than [`NODES_MAX`] types once references are expanded.
    #[error("schema holds more than {0} types once named references are expanded")]
    TooBig(usize),
    /// A construct this module does not read, or a malformed one.
    #[error("schema at {path}: {reason}")]
    Invalid {
        /// Where in the schema (field names, `items`, `values`).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its schema.
    pub schema: Schema,
    /// Its default (the JSON of the schema), if it has one.
    pub default: Option<Json>,
}

/// A parsed schema. Named types carry their unqualified name (resolution matches on it).
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean,
    /// `int`.
    Int,
    /// `long`.
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `bytes`.
    Bytes,
    /// `string`.
    String,
    /// A record.
    Record {
        /// Unqualified name.
        name: String,
        /// Fields in order.
        fields: Vec<Field>,
    },
    /// An enum.
    Enum {
        /// Unqualified name.
        name: String,
        /// Symbols in order.
        symbols: Vec<String>,
        /// The reader's fallback for an unknown symbol.
        default: Option<String>,
    },
    /// An array.
    Array(Box<Schema>),
    /// A map with string keys.
    Map(Box<Schema>),
    /// A union.
    Union(Vec<Schema>),
    /// A fixed-size byte string.
    Fixed {
        /// Unqualified name.
        name: String,
        /// Size in bytes.
        size: usize,
    },
}

/// A decoded value, shaped by the reader schema.
impl Schema {
    /// Parses `.avsc` text.
    pub fn parse(text: &str) -> Result<Schema, SchemaError> {
        if text.len() > SCHEMA_BYTES_MAX {
            return Err(SchemaError::TooLarge {
                len: text.len(),
                max: SCHEMA_BYTES_MAX,
            });
        }
        // serde_json's own recursion limit (128) bounds the JSON before our depth check.
        let json: Json = serde_json::from_str(text).map_err(|e| SchemaError::Json(e.to_string()))?;
        let mut parser = Parser {
            named: BTreeMap::new(),
            defining: Vec::new(),
            nodes: 0,
        };
        parser.parse(&json, "", "$", 0)
    }

    /// The unqualified name of a named type.
    pub fn name(&self) -> Option<&str> {
        match self {
            Schema::Record { name, .. } | Schema::Enum { name, .. } | Schema::Fixed { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Types in this tree (itself included).
    pub fn nodes(&self) -> usize {
        1 + match self {
            Schema::Record { fields, .. } => fields.iter().map(|f| f.schema.nodes()).sum(),
            Schema::Array(s) | Schema::Map(s) => s.nodes(),
            Schema::Union(b) => b.iter().map(Schema::nodes).sum(),
            _ => 0,
        }
    }

    /// Deepest nesting of this tree (a primitive is 1).
    pub fn depth(&self) -> usize {
        1 + match self {
            Schema::Record { fields, .. } => fields.iter().map(|f| f.schema.depth()).max().unwrap_or(0),
            Schema::Array(s) | Schema::Map(s) => s.depth(),
            Schema::Union(b) => b.iter().map(Schema::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The type's kind, as the specification names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Schema::Null => "null",
            Schema::Boolean => "boolean",
            Schema::Int => "int",
            Schema::Long => "long",
            Schema::Float => "float",
            Schema::Double => "double",
            Schema::Bytes => "bytes",
            Schema::String => "string",
            Schema::Record { .. } => "record",
            Schema::Enum { .. } => "enum",
            Schema::Array(_) => "array",
            Schema::Map(_) => "map",
            Schema::Union(_) => "union",
            Schema::Fixed { .. } => "fixed",
        }
    }
}

struct Parser {
    /// Named types defined so far, by full and by unqualified name.
    named: BTreeMap<String, Schema>,
    /// Names being defined (a reference to one of them is recursion).
    defining: Vec<String>,
    /// Types so far, references expanded (bounded by [`NODES_MAX`]).
    nodes: usize,
}

fn invalid(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl Parser {
    fn parse(&mut self, json: &Json, namespace: &str, path: &str, depth: usize) -> Result<Schema, SchemaError> {
        if depth > DEPTH_MAX {
            return Err(SchemaError::TooDeep(DEPTH_MAX));
        }
        self.count(1)?;
        match json {
            Json::String(name) => self.by_name(name, namespace, path, depth),
            Json::Array(branches) => {
                let mut out = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter().enumerate() {
                    let s = self.parse(b, namespace, &format!("{path}[{i}]"), depth + 1)?;
                    if matches!(s, Schema::Union(_)) {
                        return Err(invalid(path, "a union may not contain a union"));
                    }
                    out.push(s);
                }
                Ok(Schema::Union(out))
            }
            Json::Object(obj) => {
                let ty = obj
                    .get("type")
                    .ok_or_else(|| invalid(path, "object without \"type\""))?;
                match ty.as_str() {
                    Some("record") | Some("error") => self.record(obj, namespace, path, depth),
                    Some("enum") => self.enumeration(obj, namespace, path),
                    Some("array") => {
                        let items = obj.get("items").ok_or_else(|| invalid(path, "array without items"))?;
                        Ok(Schema::Array(Box::new(self.parse(
                            items,
                            namespace,
                            &format!("{path}.items"),
                            depth + 1,
                        )?)))
                    }
                    Some("map") => {
                        let values = obj.get("values").ok_or_else(|| invalid(path, "map without values"))?;
                        Ok(Schema::Map(Box::new(self.parse(
                            values,
                            namespace,
                            &format!("{path}.values"),
                            depth + 1,
                        )?)))
                    }
                    Some("fixed") => self.fixed(obj, namespace, path),
                    // {"type": "long", "logicalType": ...} and {"type": {...}}.
                    _ => self.parse(ty, namespace, path, depth + 1),
                }
            }
            _ => Err(invalid(path, "expected a type name, an object or a union")),
        }
    }

    fn by_name(&mut self, name: &str, namespace: &str, path: &str, depth: usize) -> Result<Schema, SchemaError> {
        let primitive = match name {
            "null" => Some(Schema::Null),
            "boolean" => Some(Schema::Boolean),
            "int" => Some(Schema::Int),
            "long" => Some(Schema::Long),
            "float" => Some(Schema::Float),
            "double" => Some(Schema::Double),
            "bytes" => Some(Schema::Bytes),
            "string" => Some(Schema::String),
            _ => None,
        };
        if let Some(p) = primitive {
            return Ok(p);
        }
        let full = full_name(name, namespace);
        if self.defining.iter().any(|d| *d == full || *d == name) {
            return Err(invalid(path, format!("recursive reference to {name} is not supported")));
        }
        let found = self
            .named
            .get(&full)
            .or_else(|| self.named.get(name))
            .cloned()
            .ok_or_else(|| invalid(path, format!("unknown type {name:?}")))?;
        // The expanded tree is what decoding walks: it is bounded, not just the text.
        if depth + found.depth() > DEPTH_MAX + 1 {
            return Err(SchemaError::TooDeep(DEPTH_MAX));
        }
        self.count(found.nodes())?;
        Ok(found)
    }

    fn count(&mut self, n: usize) -> Result<(), SchemaError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > NODES_MAX {
            return Err(SchemaError::TooBig(NODES_MAX));
        }
        Ok(())
    }

    fn names(
        &self,
        obj: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
    ) -> Result<(String, String, String), SchemaError> {
        let name = obj
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| invalid(path, "named type without a name"))?;
        if obj.contains_key("aliases") {
            return Err(invalid(path, "aliases are not supported"));
        }
        let ns = obj.get("namespace").and_then(Json::as_str).unwrap_or(namespace);
        let full = full_name(name, ns);
        let short = full.rsplit('.').next().unwrap_or(&full).to_owned();
        let ns = full.rsplit_once('.').map_or(String::new(), |(n, _)| n.to_owned());
        Ok((full, short, ns))
    }

    fn define(&mut self, full: String, short: &str, schema: &Schema) {
        self.named.insert(short.to_owned(), schema.clone());
        self.named.insert(full, schema.clone());
    }

    fn record(
        &mut self,
        obj: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
        depth: usize,
    ) -> Result<Schema, SchemaError> {
        let (full, short, ns) = self.names(obj, namespace, path)?;
        let list = obj
            .get("fields")
            .and_then(Json::as_array)
            .ok_or_else(|| invalid(path, "record without a fields array"))?;
        self.defining.push(full.clone());
        let mut fields: Vec<Field> = Vec::with_capacity(list.len());
        for f in list {
            let name = f
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| invalid(path, "field without a name"))?;
            let fpath = format!("{path}.{name}");
            if fields.iter().any(|g| g.name == name) {
                return Err(invalid(&fpath, "field name repeated"));
            }
            let ty = f.get("type").ok_or_else(|| invalid(&fpath, "field without a type"))?;
            let schema = self.parse(ty, &ns, &fpath, depth + 1)?;
            let default = f.get("default").cloned();
            if let Some(d) = &default {
                // A default that does not fit its schema is refused now, not at decode time.
                check_default(&schema, d, &fpath)?;
            }
            fields.push(Field {
                name: name.to_owned(),
                schema,
                default,
            });
        }
        self.defining.pop();
        let schema = Schema::Record {
            name: short.clone(),
            fields,
        };
        self.define(full, &short, &schema);
        Ok(schema)
    }

    fn enumeration(
        &mut self,
        obj: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
    ) -> Result<Schema, SchemaError> {
        let (full, short, _) = self.names(obj, namespace, path)?;
        let symbols: Vec<String> = obj
            .get("symbols")
            .and_then(Json::as_array)
            .ok_or_else(|| invalid(path, "enum without symbols"))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(path, "enum symbol not a string"))
            })
            .collect::<Result<_, _>>()?;
        let default = obj.get("default").and_then(Json::as_str).map(str::to_owned);
        let schema = Schema::Enum {
            name: short.clone(),
            symbols,
            default,
        };
        self.define(full, &short, &schema);
        Ok(schema)
    }

    fn fixed(
        &mut self,
        obj: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
    ) -> Result<Schema, SchemaError> {
        let (full, short, _) = self.names(obj, namespace, path)?;
        let size = obj
            .get("size")
            .and_then(Json::as_u64)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| *s <= SCHEMA_BYTES_MAX)
            .ok_or_else(|| invalid(path, "fixed without a valid size"))?;
        let schema = Schema::Fixed {
            name: short.clone(),
            size,
        };
        self.define(full, &short, &schema);
        Ok(schema)
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Checks a field default (JSON, per the Avro specification: a union's default is of its
/// first branch) against its schema.
fn check_default(schema: &Schema, json: &Json, path: &str) -> Result<(), SchemaError> {
    let bad = || invalid(path, format!("default {json} does not fit {}", schema.kind()));
    let fits = match (schema, json) {
        (Schema::Null, Json::Null) | (Schema::Boolean, Json::Bool(_)) => true,
        (Schema::Int, Json::Number(n)) => n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
        (Schema::Long, Json::Number(n)) => n.as_i64().is_some(),
        (Schema::Float | Schema::Double, Json::Number(n)) => n.as_f64().is_some(),
        (Schema::Bytes, Json::String(s)) => latin1_len(s).is_some(),
        (Schema::Fixed { size, .. }, Json::String(s)) => latin1_len(s) == Some(*size),
        (Schema::String, Json::String(_)) => true,
        (Schema::Enum { symbols, .. }, Json::String(s)) => symbols.contains(s),
        (Schema::Array(items), Json::Array(a)) => {
            for v in a {
                check_default(items, v, path)?;
            }
            true
        }
        (Schema::Map(values), Json::Object(m)) => {
            for v in m.values() {
                check_default(values, v, path)?;
            }
            true
        }
        (Schema::Union(branches), _) => {
            let first = branches.first().ok_or_else(bad)?;
            return check_default(first, json, path);
        }
        (Schema::Record { fields, .. }, Json::Object(m)) => {
            for f in fields {
                match (m.get(&f.name), &f.default) {
                    (Some(v), _) | (None, Some(v)) => check_default(&f.schema, v, path)?,
                    (None, None) => return Err(bad()),
                }
            }
            true
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Avro JSON encodes bytes as a string of code points 0..=255: their count, if it is one.
fn latin1_len(s: &str) -> Option<usize> {
    s.chars()
        .try_fold(0usize, |n, c| (u32::from(c) <= 0xff).then_some(n + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_with_unsupported_or_broken_parts_are_refused() {
        for text in [
            "",
            "{",
            r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#,
            r#"{"type":"record","name":"A","aliases":["B"],"fields":[]}"#,
            r#"{"type":"record","name":"A","fields":[{"name":"a","type":"int","default":"x"}]}"#,
            r#"{"type":"record","name":"A","fields":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}"#,
            r#"["null",["int"]]"#,
            r#""nope""#,
            r#"{"type":"fixed","name":"F"}"#,
            r#"{"type":"record","name":"A","fields":[{"name":"f","type":{"type":"fixed","name":"F","size":2},"default":"abc"}]}"#,
        ] {
            assert!(Schema::parse(text).is_err(), "{text}");
        }
        let deep = format!(
            "{}\"int\"{}",
            "{\"type\":\"array\",\"items\":".repeat(40),
            "}".repeat(40)
        );
        assert_eq!(Schema::parse(&deep), Err(SchemaError::TooDeep(DEPTH_MAX)));
        let big = " ".repeat(SCHEMA_BYTES_MAX + 1);
        assert!(matches!(Schema::parse(&big), Err(SchemaError::TooLarge { .. })));
    }

    #[test]
    fn references_cannot_expand_a_schema_beyond_its_bounds() {
        // Each record holds its predecessor three times: 3^k types after k levels.
        let mut text = String::from(r#"{"type":"record","name":"R0","fields":[{"name":"a","type":"int"}]}"#);
        for k in 1..12 {
            let p = k - 1;
            text = format!(
                r#"{{"type":"record","name":"R{k}","fields":[{{"name":"a","type":{text}}},{{"name":"b","type":"R{p}"}},{{"name":"c","type":"R{p}"}}]}}"#
            );
            if Schema::parse(&text).is_err() {
                break;
            }
        }
        assert!(matches!(
            Schema::parse(&text),
            Err(SchemaError::TooBig(NODES_MAX) | SchemaError::TooDeep(_))
        ));
    }

    #[test]
    fn named_types_are_referenced_and_logical_types_read_as_their_base() {
        let s = Schema::parse(
            r#"{"type":"record","name":"R","namespace":"x.y","fields":[
                {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
                {"name":"e2","type":"Color"},
                {"name":"e3","type":"x.y.Color"},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"f","type":{"type":"fixed","name":"Two","size":2},"default":"ab"}]}"#,
        )
        .expect("schema");
        let Schema::Record { name, fields } = s else {
            panic!("a record")
        };
        assert_eq!(name, "R");
        assert_eq!(fields[1].schema, fields[0].schema);
        assert_eq!(fields[2].schema, fields[0].schema);
        assert_eq!(fields[3].schema, Schema::Long);
        assert_eq!(fields[4].schema.name(), Some("Two"));
    }
}
