//! Avro: schemas parsed from `.avsc` JSON, the binary encoding decoded with schema
//! resolution (writer schema → reader schema, as the Avro specification defines it), for
//! the types a platform schema can use.
//!
//! Why not the `apache-avro` crate: the bridge reads one record type from untrusted bytes,
//! and needs resolution, typed errors and hard bounds on every length and count. The crate
//! brings a large dependency tree (regex, uuid, bigdecimal, num-bigint, strum, serde
//! derive machinery) for codecs, logical types and writers the bridge never uses. This
//! module is small enough to read in one sitting and is tested against an independent
//! encoder (Python's fastavro, through confluent-kafka's `AvroSerializer`) in
//! `tests/kafka.rs`.
//!
//! Supported: every primitive, records, enums, arrays, maps, unions, fixed; named-type
//! references to earlier definitions; field defaults; the promotions int → long → float →
//! double and string ↔ bytes. Logical types are read as their underlying type. Not
//! supported (refused when the schema is parsed, never at decode time): recursive types,
//! aliases.
//!
//! Bounds: schema text and nesting depth at parse; at decode, every length is checked
//! against the bytes left, varints are at most 10 bytes, and a message holds at most
//! [`VALUES_MAX`] values, so a hostile message cannot make the decoder allocate or loop
//! beyond its own size.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use thiserror::Error;

/// Longest schema text accepted, in bytes.
pub const SCHEMA_BYTES_MAX: usize = 256 * 1024;
/// Deepest nesting of a schema (and of a decoded value).
pub const DEPTH_MAX: usize = 32;
/// Values (of any type, nested ones included) one message may hold.
pub const VALUES_MAX: usize = 65_536;

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
    /// A construct this module does not read, or a malformed one.
    #[error("schema at {path}: {reason}")]
    Invalid {
        /// Where in the schema (field names, `items`, `values`).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ends inside a value.
    #[error("message truncated: {needed} more bytes needed at byte {at}")]
    Truncated {
        /// Offset of the value.
        at: usize,
        /// Bytes it needs beyond the end.
        needed: usize,
    },
    /// A varint runs past 10 bytes or past 64 bits.
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
    /// An int outside the 32-bit range.
    #[error("int out of range at byte {0}")]
    IntRange(usize),
    /// A negative length or one larger than the bytes left.
    #[error("length {len} at byte {at} does not fit the {left} bytes left")]
    BadLength {
        /// Offset of the length.
        at: usize,
        /// The length read.
        len: i64,
        /// Bytes left.
        left: usize,
    },
    /// A string that is not UTF-8.
    #[error("string at byte {0} is not UTF-8")]
    BadUtf8(usize),
    /// A union branch index outside the union.
    #[error("union index {index} at byte {at}: the union has {branches} branches")]
    BadUnionIndex {
        /// Offset of the index.
        at: usize,
        /// The index read.
        index: i64,
        /// Branches of the writer's union.
        branches: usize,
    },
    /// An enum symbol index outside the enum.
    #[error("enum index {index} at byte {at}: the enum has {symbols} symbols")]
    BadEnumIndex {
        /// Offset of the index.
        at: usize,
        /// The index read.
        index: i64,
        /// Symbols of the writer's enum.
        symbols: usize,
    },
    /// A boolean byte other than 0 or 1.
    #[error("boolean byte {value} at byte {at}")]
    BadBoolean {
        /// Offset.
        at: usize,
        /// The byte.
        value: u8,
    },
    /// More than [`VALUES_MAX`] values.
    #[error("message holds more than {0} values")]
    TooManyValues(usize),
    /// Nested deeper than [`DEPTH_MAX`].
    #[error("value nests deeper than {0} levels")]
    TooDeep(usize),
    /// Bytes left after the value.
    #[error("{0} bytes after the end of the value")]
    Trailing(usize),
    /// Writer and reader schemas do not resolve (Avro's resolution rules).
    #[error("writer and reader schemas do not match at {path}: {reason}")]
    Mismatch {
        /// Where (field names).
        path: String,
        /// What does not match.
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
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `string`.
    String(String),
    /// A record's fields, in the reader's order.
    Record(Vec<(String, Value)>),
    /// An enum symbol.
    Enum(String),
    /// An array.
    Array(Vec<Value>),
    /// A map, in the writer's order.
    Map(Vec<(String, Value)>),
    /// A union: the reader's branch index and the value.
    Union(usize, Box<Value>),
    /// A fixed.
    Fixed(Vec<u8>),
}

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
        };
        parser.parse(&json, "", "$", 0)
    }

    fn name(&self) -> Option<&str> {
        match self {
            Schema::Record { name, .. } | Schema::Enum { name, .. } | Schema::Fixed { name, .. } => Some(name),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
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
        match json {
            Json::String(name) => self.by_name(name, namespace, path),
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

    fn by_name(&mut self, name: &str, namespace: &str, path: &str) -> Result<Schema, SchemaError> {
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
        self.named
            .get(&full)
            .or_else(|| self.named.get(name))
            .cloned()
            .ok_or_else(|| invalid(path, format!("unknown type {name:?}")))
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
                default_value(&schema, d, &fpath)?;
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

/// The value of a field default (JSON, per the Avro specification: a union's default is of
/// its first branch).
fn default_value(schema: &Schema, json: &Json, path: &str) -> Result<Value, SchemaError> {
    let bad = || invalid(path, format!("default {json} does not fit {}", schema.kind()));
    Ok(match (schema, json) {
        (Schema::Null, Json::Null) => Value::Null,
        (Schema::Boolean, Json::Bool(b)) => Value::Boolean(*b),
        (Schema::Int, Json::Number(n)) => Value::Int(n.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(bad)?),
        (Schema::Long, Json::Number(n)) => Value::Long(n.as_i64().ok_or_else(bad)?),
        (Schema::Float, Json::Number(n)) => Value::Float(n.as_f64().ok_or_else(bad)? as f32),
        (Schema::Double, Json::Number(n)) => Value::Double(n.as_f64().ok_or_else(bad)?),
        (Schema::Bytes, Json::String(s)) => Value::Bytes(latin1(s).ok_or_else(bad)?),
        (Schema::Fixed { size, .. }, Json::String(s)) => {
            let b = latin1(s).filter(|b| b.len() == *size).ok_or_else(bad)?;
            Value::Fixed(b)
        }
        (Schema::String, Json::String(s)) => Value::String(s.clone()),
        (Schema::Enum { symbols, .. }, Json::String(s)) if symbols.contains(s) => Value::Enum(s.clone()),
        (Schema::Array(items), Json::Array(a)) => Value::Array(
            a.iter()
                .map(|v| default_value(items, v, path))
                .collect::<Result<_, _>>()?,
        ),
        (Schema::Map(values), Json::Object(m)) => Value::Map(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), default_value(values, v, path)?)))
                .collect::<Result<_, SchemaError>>()?,
        ),
        (Schema::Union(branches), _) => {
            let first = branches.first().ok_or_else(bad)?;
            Value::Union(0, Box::new(default_value(first, json, path)?))
        }
        (Schema::Record { fields, .. }, Json::Object(m)) => {
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                let v = match (m.get(&f.name), &f.default) {
                    (Some(v), _) | (None, Some(v)) => default_value(&f.schema, v, path)?,
                    (None, None) => return Err(bad()),
                };
                out.push((f.name.clone(), v));
            }
            Value::Record(out)
        }
        _ => return Err(bad()),
    })
}

/// Avro JSON encodes bytes as a string of code points 0..=255.
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Decodes one value written with `writer`, resolved to `reader`; the whole of `bytes`
/// must be the value.
pub fn decode(bytes: &[u8], writer: &Schema, reader: &Schema) -> Result<Value, DecodeError> {
    let mut d = Decoder {
        buf: bytes,
        at: 0,
        values: 0,
    };
    let v = d.resolve(writer, reader, 0, "$")?;
    if d.at != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - d.at));
    }
    Ok(v)
}

struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
    values: usize,
}

fn mismatch(path: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Mismatch {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl Decoder<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if n > self.left() {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: n - self.left(),
            });
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn count_value(&mut self) -> Result<(), DecodeError> {
        self.values += 1;
        if self.values > VALUES_MAX {
            return Err(DecodeError::TooManyValues(VALUES_MAX));
        }
        Ok(())
    }

    /// A zigzag varint long: at most 10 bytes, the 10th holding only the top bit.
    fn long(&mut self) -> Result<i64, DecodeError> {
        let start = self.at;
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.at)
                .ok_or(DecodeError::Truncated { at: start, needed: 1 })?;
            self.at += 1;
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint(start));
            }
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(DecodeError::BadVarint(start))
    }

    fn int(&mut self) -> Result<i32, DecodeError> {
        let at = self.at;
        i32::try_from(self.long()?).map_err(|_| DecodeError::IntRange(at))
    }

    /// A length: non-negative and no larger than the bytes left.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let at = self.at;
        let len = self.long()?;
        let left = self.left();
        usize::try_from(len)
            .ok()
            .filter(|n| *n <= left)
            .ok_or(DecodeError::BadLength { at, len, left })
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.len()?;
        Ok(self.take(n)?.to_vec())
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.at;
        let n = self.len()?;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8(at))
    }

    fn boolean(&mut self) -> Result<bool, DecodeError> {
        let at = self.at;
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadBoolean { at, value }),
        }
    }

    fn float(&mut self) -> Result<f32, DecodeError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn double(&mut self) -> Result<f64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// The item count of the next array or map block (0 ends the container). A negative
    /// count is followed by the block's size in bytes, which is read and checked.
    fn block_count(&mut self) -> Result<usize, DecodeError> {
        let at = self.at;
        let count = self.long()?;
        if count < 0 {
            self.len()?;
        }
        let n = count.unsigned_abs();
        // Every item is at least one value: more than the budget left cannot be honest.
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= VALUES_MAX)
            .ok_or(DecodeError::BadLength {
                at,
                len: count,
                left: self.left(),
            })
    }

    fn resolve(&mut self, w: &Schema, r: &Schema, depth: usize, path: &str) -> Result<Value, DecodeError> {
        if depth > DEPTH_MAX {
            return Err(DecodeError::TooDeep(DEPTH_MAX));
        }
        self.count_value()?;
        // A writer union is resolved branch by branch, whatever the reader is.
        if let Schema::Union(wb) = w {
            let at = self.at;
            let index = self.long()?;
            let branch = usize::try_from(index)
                .ok()
                .and_then(|i| wb.get(i))
                .ok_or(DecodeError::BadUnionIndex {
                    at,
                    index,
                    branches: wb.len(),
                })?;
            return self.resolve(branch, r, depth + 1, path);
        }
        if let Schema::Union(rb) = r {
            let (i, branch) = pick_branch(w, rb).ok_or_else(|| {
                mismatch(
                    path,
                    format!("writer's {} matches no branch of the reader's union", w.kind()),
                )
            })?;
            let v = self.resolve(w, branch, depth + 1, path)?;
            return Ok(Value::Union(i, Box::new(v)));
        }
        self.resolve_plain(w, r, depth, path)
    }

    fn resolve_plain(&mut self, w: &Schema, r: &Schema, depth: usize, path: &str) -> Result<Value, DecodeError> {
        use Schema as S;
        Ok(match (w, r) {
            (S::Null, S::Null) => Value::Null,
            (S::Boolean, S::Boolean) => Value::Boolean(self.boolean()?),
            (S::Int, S::Int) => Value::Int(self.int()?),
            (S::Int, S::Long) => Value::Long(i64::from(self.int()?)),
            (S::Int, S::Float) => Value::Float(self.int()? as f32),
            (S::Int, S::Double) => Value::Double(f64::from(self.int()?)),
            (S::Long, S::Long) => Value::Long(self.long()?),
            (S::Long, S::Float) => Value::Float(self.long()? as f32),
            (S::Long, S::Double) => Value::Double(self.long()? as f64),
            (S::Float, S::Float) => Value::Float(self.float()?),
            (S::Float, S::Double) => Value::Double(f64::from(self.float()?)),
            (S::Double, S::Double) => Value::Double(self.double()?),
            (S::Bytes, S::Bytes) => Value::Bytes(self.bytes()?),
            (S::String, S::String) | (S::Bytes, S::String) => Value::String(self.string()?),
            (S::String, S::Bytes) => Value::Bytes(self.bytes()?),
            (S::Fixed { name: wn, size: ws }, S::Fixed { name: rn, size: rs }) if wn == rn && ws == rs => {
                Value::Fixed(self.take(*ws)?.to_vec())
            }
            (
                S::Enum {
                    name: wn, symbols: ws, ..
                },
                S::Enum {
                    name: rn,
                    symbols: rs,
                    default,
                },
            ) if wn == rn => {
                let at = self.at;
                let index = self.long()?;
                let symbol = usize::try_from(index)
                    .ok()
                    .and_then(|i| ws.get(i))
                    .ok_or(DecodeError::BadEnumIndex {
                        at,
                        index,
                        symbols: ws.len(),
                    })?;
                if rs.contains(symbol) {
                    Value::Enum(symbol.clone())
                } else if let Some(d) = default {
                    Value::Enum(d.clone())
                } else {
                    return Err(mismatch(
                        path,
                        format!("symbol {symbol:?} unknown to the reader's enum"),
                    ));
                }
            }
            (S::Array(wi), S::Array(ri)) => {
                let mut out = Vec::new();
                loop {
                    let n = self.block_count()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        out.push(self.resolve(wi, ri, depth + 1, path)?);
                    }
                }
                Value::Array(out)
            }
            (S::Map(wv), S::Map(rv)) => {
                let mut out = Vec::new();
                loop {
                    let n = self.block_count()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        let k = self.string()?;
                        let v = self.resolve(wv, rv, depth + 1, path)?;
                        out.push((k, v));
                    }
                }
                Value::Map(out)
            }
            (S::Record { name: wn, fields: wf }, S::Record { name: rn, fields: rf }) if wn == rn => {
                self.record(wf, rf, depth, path)?
            }
            _ => {
                let (wn, rn) = (w.name().unwrap_or(w.kind()), r.name().unwrap_or(r.kind()));
                return Err(mismatch(
                    path,
                    format!("writer's {wn} cannot be read as the reader's {rn}"),
                ));
            }
        })
    }

    /// Writer fields in the writer's order: read into the reader's field of the same name,
    /// or read and dropped; reader fields the writer lacks take their defaults.
    fn record(&mut self, wf: &[Field], rf: &[Field], depth: usize, path: &str) -> Result<Value, DecodeError> {
        let mut slots: Vec<Option<Value>> = vec![None; rf.len()];
        for f in wf {
            let fpath = format!("{path}.{}", f.name);
            match rf.iter().position(|g| g.name == f.name) {
                Some(i) => slots[i] = Some(self.resolve(&f.schema, &rf[i].schema, depth + 1, &fpath)?),
                None => {
                    self.resolve(&f.schema, &f.schema, depth + 1, &fpath)?;
                }
            }
        }
        let mut out = Vec::with_capacity(rf.len());
        for (slot, g) in slots.into_iter().zip(rf) {
            let v = match slot {
                Some(v) => v,
                None => {
                    let fpath = format!("{path}.{}", g.name);
                    let d = g
                        .default
                        .as_ref()
                        .ok_or_else(|| mismatch(&fpath, "the writer lacks the field and the reader has no default"))?;
                    default_value(&g.schema, d, &fpath).map_err(|e| mismatch(&fpath, e.to_string()))?
                }
            };
            out.push((g.name.clone(), v));
        }
        Ok(Value::Record(out))
    }
}

/// The reader-union branch a writer schema resolves to: the first that matches exactly,
/// else the first reachable by promotion.
fn pick_branch<'s>(w: &Schema, branches: &'s [Schema]) -> Option<(usize, &'s Schema)> {
    let same = |b: &Schema| match (w, b) {
        (Schema::Record { name: a, .. }, Schema::Record { name: b, .. })
        | (Schema::Enum { name: a, .. }, Schema::Enum { name: b, .. })
        | (Schema::Fixed { name: a, .. }, Schema::Fixed { name: b, .. }) => a == b,
        (Schema::Array(_), Schema::Array(_)) | (Schema::Map(_), Schema::Map(_)) => true,
        _ => std::mem::discriminant(w) == std::mem::discriminant(b),
    };
    let promotes = |b: &Schema| {
        matches!(
            (w, b),
            (Schema::Int, Schema::Long | Schema::Float | Schema::Double)
                | (Schema::Long, Schema::Float | Schema::Double)
                | (Schema::Float, Schema::Double)
                | (Schema::String, Schema::Bytes)
                | (Schema::Bytes, Schema::String)
        )
    };
    branches
        .iter()
        .enumerate()
        .find(|(_, b)| same(b))
        .or_else(|| branches.iter().enumerate().find(|(_, b)| promotes(b)))
}

/// Encodes `v` as `schema` (no resolution): for tests and the benchmark's producer.
pub fn encode(v: &Value, schema: &Schema, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let wrong = || mismatch("$", format!("value does not fit {}", schema.kind()));
    match (schema, v) {
        (Schema::Null, Value::Null) => {}
        (Schema::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
        (Schema::Int, Value::Int(i)) => put_long(i64::from(*i), out),
        (Schema::Long, Value::Long(i)) => put_long(*i, out),
        (Schema::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Schema::Double, Value::Double(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (Schema::Bytes, Value::Bytes(b)) | (Schema::Fixed { .. }, Value::Fixed(b)) => {
            if !matches!(schema, Schema::Fixed { .. }) {
                put_long(b.len() as i64, out);
            }
            out.extend_from_slice(b);
        }
        (Schema::String, Value::String(s)) => {
            put_long(s.len() as i64, out);
            out.extend_from_slice(s.as_bytes());
        }
        (Schema::Enum { symbols, .. }, Value::Enum(s)) => {
            let i = symbols.iter().position(|x| x == s).ok_or_else(wrong)?;
            put_long(i as i64, out);
        }
        (Schema::Array(items), Value::Array(a)) => {
            if !a.is_empty() {
                put_long(a.len() as i64, out);
                for x in a {
                    encode(x, items, out)?;
                }
            }
            put_long(0, out);
        }
        (Schema::Map(values), Value::Map(m)) => {
            if !m.is_empty() {
                put_long(m.len() as i64, out);
                for (k, x) in m {
                    put_long(k.len() as i64, out);
                    out.extend_from_slice(k.as_bytes());
                    encode(x, values, out)?;
                }
            }
            put_long(0, out);
        }
        (Schema::Union(branches), Value::Union(i, x)) => {
            let b = branches.get(*i).ok_or_else(wrong)?;
            put_long(*i as i64, out);
            encode(x, b, out)?;
        }
        (Schema::Record { fields, .. }, Value::Record(vals)) => {
            for f in fields {
                let x = vals
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, x)| x)
                    .ok_or_else(wrong)?;
                encode(x, &f.schema, out)?;
            }
        }
        _ => return Err(wrong()),
    }
    Ok(())
}

/// Appends a zigzag varint.
pub fn put_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Schema {
        Schema::parse(text).expect("schema")
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_long(v, &mut out);
            assert!(out.len() <= 10);
            assert_eq!(decode(&out, &Schema::Long, &Schema::Long), Ok(Value::Long(v)), "{v}");
        }
    }

    #[test]
    fn overlong_varints_and_int_overflow_are_refused() {
        let eleven = [0xffu8; 11];
        assert_eq!(
            decode(&eleven, &Schema::Long, &Schema::Long),
            Err(DecodeError::BadVarint(0))
        );
        let mut tenth_too_big = vec![0xffu8; 9];
        tenth_too_big.push(0x02);
        assert_eq!(
            decode(&tenth_too_big, &Schema::Long, &Schema::Long),
            Err(DecodeError::BadVarint(0))
        );
        let mut big = Vec::new();
        put_long(i64::from(i32::MAX) + 1, &mut big);
        assert_eq!(decode(&big, &Schema::Int, &Schema::Int), Err(DecodeError::IntRange(0)));
        assert!(matches!(
            decode(&[0x80], &Schema::Long, &Schema::Long),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn strings_check_length_and_utf8() {
        let mut huge = Vec::new();
        put_long(1 << 40, &mut huge);
        assert!(matches!(
            decode(&huge, &Schema::String, &Schema::String),
            Err(DecodeError::BadLength { .. })
        ));
        let mut neg = Vec::new();
        put_long(-5, &mut neg);
        assert!(matches!(
            decode(&neg, &Schema::Bytes, &Schema::Bytes),
            Err(DecodeError::BadLength { len: -5, .. })
        ));
        let bad_utf8 = [4u8, 0xff, 0xfe];
        assert_eq!(
            decode(&bad_utf8, &Schema::String, &Schema::String),
            Err(DecodeError::BadUtf8(0))
        );
        assert_eq!(
            decode(&[2, b'a', 0], &Schema::String, &Schema::String),
            Err(DecodeError::Trailing(1))
        );
    }

    #[test]
    fn containers_of_nulls_cannot_claim_more_items_than_the_budget() {
        let arr = Schema::Array(Box::new(Schema::Null));
        let mut claim = Vec::new();
        put_long(1 << 50, &mut claim);
        assert!(matches!(decode(&claim, &arr, &arr), Err(DecodeError::BadLength { .. })));
        // Many honest blocks of nulls still stop at the value budget.
        let mut many = Vec::new();
        for _ in 0..3 {
            put_long(VALUES_MAX as i64, &mut many);
        }
        put_long(0, &mut many);
        assert_eq!(decode(&many, &arr, &arr), Err(DecodeError::TooManyValues(VALUES_MAX)));
    }

    #[test]
    fn union_index_out_of_range_is_refused() {
        let u = s(r#"["null","string"]"#);
        assert_eq!(
            decode(&[4], &u, &u),
            Err(DecodeError::BadUnionIndex {
                at: 0,
                index: 2,
                branches: 2
            })
        );
        assert!(matches!(
            decode(&[1], &u, &u),
            Err(DecodeError::BadUnionIndex { index: -1, .. })
        ));
    }

    #[test]
    fn a_newer_writer_with_an_added_field_is_read_and_the_field_skipped() {
        let reader = s(
            r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","double"],"default":null}]}"#,
        );
        let writer = s(
            r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"x","type":{"type":"map","values":"long"},"default":{}},{"name":"b","type":["null","double"],"default":null}]}"#,
        );
        let v = Value::Record(vec![
            ("a".into(), Value::String("hi".into())),
            ("x".into(), Value::Map(vec![("k".into(), Value::Long(7))])),
            ("b".into(), Value::Union(1, Box::new(Value::Double(2.5)))),
        ]);
        let mut bytes = Vec::new();
        encode(&v, &writer, &mut bytes).expect("encode");
        let got = decode(&bytes, &writer, &reader).expect("resolve");
        assert_eq!(
            got,
            Value::Record(vec![
                ("a".into(), Value::String("hi".into())),
                ("b".into(), Value::Union(1, Box::new(Value::Double(2.5)))),
            ])
        );
    }

    #[test]
    fn an_older_writer_missing_a_field_gets_the_readers_default_or_a_mismatch() {
        let writer = s(r#"{"type":"record","name":"E","fields":[{"name":"a","type":"int"}]}"#);
        let reader = s(
            r#"{"type":"record","name":"E","fields":[{"name":"a","type":"double"},{"name":"c","type":["null","string"],"default":null}]}"#,
        );
        let got = decode(&[6], &writer, &reader).expect("resolve");
        assert_eq!(
            got,
            Value::Record(vec![
                ("a".into(), Value::Double(3.0)),
                ("c".into(), Value::Union(0, Box::new(Value::Null))),
            ])
        );
        let strict =
            s(r#"{"type":"record","name":"E","fields":[{"name":"a","type":"int"},{"name":"c","type":"string"}]}"#);
        assert!(matches!(
            decode(&[6], &writer, &strict),
            Err(DecodeError::Mismatch { .. })
        ));
        let other = s(r#"{"type":"record","name":"F","fields":[{"name":"a","type":"int"}]}"#);
        assert!(matches!(
            decode(&[6], &writer, &other),
            Err(DecodeError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_plain_writer_resolves_into_a_reader_union_and_a_union_writer_into_a_plain_reader() {
        let got = decode(&[4, b'h', b'i'], &Schema::String, &s(r#"["null","string"]"#)).expect("into union");
        assert_eq!(got, Value::Union(1, Box::new(Value::String("hi".into()))));
        let got = decode(&[2, 4], &s(r#"["null","int"]"#), &Schema::Long).expect("from union");
        assert_eq!(got, Value::Long(2));
        assert!(matches!(
            decode(&[0], &s(r#"["null","int"]"#), &Schema::Long),
            Err(DecodeError::Mismatch { .. })
        ));
    }

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
    fn named_types_are_referenced_and_logical_types_read_as_their_base() {
        let schema = s(r#"{"type":"record","name":"R","namespace":"x.y","fields":[
                {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]}},
                {"name":"e2","type":"Color"},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"f","type":{"type":"fixed","name":"Two","size":2}}]}"#);
        let bytes = [2u8, 0, 4, b'a', b'b'];
        let got = decode(&bytes, &schema, &schema).expect("decode");
        assert_eq!(
            got,
            Value::Record(vec![
                ("e".into(), Value::Enum("GREEN".into())),
                ("e2".into(), Value::Enum("RED".into())),
                ("t".into(), Value::Long(2)),
                ("f".into(), Value::Fixed(b"ab".to_vec())),
            ])
        );
        assert!(matches!(
            decode(&[6, 0, 4, b'a', b'b'], &schema, &schema),
            Err(DecodeError::BadEnumIndex { index: 3, .. })
        ));
        assert!(matches!(
            decode(&[0, 0, 4, b'a'], &schema, &schema),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&[2], &Schema::Boolean, &Schema::Boolean),
            Err(DecodeError::BadBoolean { .. })
        ));
    }

    #[test]
    fn random_garbage_never_panics() {
        let schema = s(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":["null","string",{"type":"map","values":["null","double"]}]},{"name":"b","type":{"type":"array","items":"long"}}]}"#,
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes, &schema, &schema);
        }
    }
}
