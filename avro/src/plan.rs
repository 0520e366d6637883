//! Decoding plans: a writer schema resolved once against the platform's reader schema
//! (`RimFastEvent`, [`crate::wire::RIM_FAST_EVENT_AVSC`]) into the steps that read a body
//! straight into an [`Event`].
//!
//! Resolution (the Avro specification's rules, applied at [`Plan::compile`], never per
//! message): the writer must be a record named `RimFastEvent`; each writer field is read
//! into the reader's field of the same name, or skipped; a reader field the writer lacks
//! takes the reader's default (null), and one without a default (`rim_node_id`,
//! `timestamp`, `critical_metrics`, `status`) makes the schema unusable. Types promote
//! int → long → float → double and string ↔ bytes; a writer union is read branch by
//! branch (a branch the reader cannot take fails the message that uses it, and a union
//! none of whose branches it can take fails the schema).
//!
//! What the plan costs per message: one pass over the body, no allocation, strings
//! checked as UTF-8 and borrowed.

use thiserror::Error;

use crate::schema::{Schema, DEPTH_MAX};
use crate::wire::READER_NAME;
use crate::{Event, METRICS_MAX};

/// Values (of any type, nested ones and skipped ones included) one message may hold.
pub const VALUES_MAX: usize = 65_536;

/// Why a writer schema cannot be read as the platform's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Avro's resolution rules do not match the writer to the reader.
    #[error("writer schema does not resolve to RimFastEvent at {path}: {reason}")]
    Mismatch {
        /// Where (field names).
        path: String,
        /// What does not match.
        reason: String,
    },
}

/// Why a body could not be decoded.
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
    /// A negative length, or one larger than the bytes left.
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
    /// More than [`METRICS_MAX`] entries in `critical_metrics`.
    #[error("critical_metrics holds more than {0} entries")]
    TooManyMetrics(usize),
    /// The writer took a union branch that the reader's field cannot hold (a null
    /// `rim_node_id`, say).
    #[error("field {field}: the writer's {branch} branch cannot be read as the reader's type")]
    Unreadable {
        /// The reader's field.
        field: &'static str,
        /// The writer's branch type.
        branch: &'static str,
    },
    /// Bytes left after the record.
    #[error("{0} bytes after the end of the record")]
    Trailing(usize),
}

/// The reader's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    NodeId,
    EventId,
    Timestamp,
    Metrics,
    Price,
    Volume,
    Stress,
    Status,
    SourceTopic,
}

/// What a reader field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `string`.
    Str,
    /// `["null", "string"]`.
    OptStr,
    /// `long`.
    Long,
    /// `["null", "double"]`.
    OptDouble,
    /// `double` (a metric's value).
    Double,
    /// `{"type": "map", "values": "double"}`.
    MetricMap,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::OptStr => "[null, string]",
            Kind::Long => "long",
            Kind::OptDouble => "[null, double]",
            Kind::Double => "double",
            Kind::MetricMap => "map<double>",
        }
    }
}

impl Target {
    const ALL: [Target; 9] = [
        Target::NodeId,
        Target::EventId,
        Target::Timestamp,
        Target::Metrics,
        Target::Price,
        Target::Volume,
        Target::Stress,
        Target::Status,
        Target::SourceTopic,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::NodeId => "rim_node_id",
            Target::EventId => "event_id",
            Target::Timestamp => "timestamp",
            Target::Metrics => "critical_metrics",
            Target::Price => "price",
            Target::Volume => "volume",
            Target::Stress => "stress",
            Target::Status => "status",
            Target::SourceTopic => "source_topic",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Target::NodeId | Target::Status => Kind::Str,
            Target::EventId | Target::SourceTopic => Kind::OptStr,
            Target::Timestamp => Kind::Long,
            Target::Metrics => Kind::MetricMap,
            Target::Price | Target::Volume | Target::Stress => Kind::OptDouble,
        }
    }

    /// The reader has a default (null) for it.
    fn has_default(self) -> bool {
        matches!(self.kind(), Kind::OptStr | Kind::OptDouble)
    }

    fn by_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// How to read one writer value for a reader field.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    Null,
    /// `string` or `bytes`, checked as UTF-8.
    Str,
    Int,
    Long,
    Float,
    Double,
    /// A map whose values are read so.
    Map(Box<Read>),
    /// Per writer branch: how to read it, or the writer's type that the reader cannot take.
    Union(Vec<Result<Read, &'static str>>),
}

/// How to skip one writer value (a field the reader does not have).
#[derive(Debug, Clone, PartialEq)]
enum Skip {
    Null,
    Boolean,
    Varint,
    Enum(usize),
    Float,
    Double,
    Bytes,
    Fixed(usize),
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Vec<Skip>),
    Record(Vec<Skip>),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Read(Target, Read),
    Skip(Skip),
}

/// A writer schema resolved to the platform schema: the steps that decode its bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    ops: Vec<Op>,
}

fn mismatch(path: &str, reason: impl Into<String>) -> PlanError {
    PlanError::Mismatch {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl Plan {
    /// Resolves `writer` against the platform's reader schema.
    pub fn compile(writer: &Schema) -> Result<Plan, PlanError> {
        let Schema::Record { name, fields } = writer else {
            return Err(mismatch(
                "$",
                format!("the writer is a {}, not a record", writer.kind()),
            ));
        };
        if name != READER_NAME {
            return Err(mismatch(
                "$",
                format!("the writer's record is {name}, not {READER_NAME}"),
            ));
        }
        if writer.depth() > DEPTH_MAX + 1 {
            return Err(mismatch("$", format!("nests deeper than {DEPTH_MAX} levels")));
        }
        let mut ops = Vec::with_capacity(fields.len());
        let mut seen = [false; Target::ALL.len()];
        for f in fields {
            let path = format!("$.{}", f.name);
            match Target::by_name(&f.name) {
                Some(t) => {
                    seen[t as usize] = true;
                    ops.push(Op::Read(t, resolve(&f.schema, t.kind(), &path)?));
                }
                None => ops.push(Op::Skip(skip_of(&f.schema))),
            }
        }
        for t in Target::ALL {
            if !seen[t as usize] && !t.has_default() {
                return Err(mismatch(
                    &format!("$.{}", t.name()),
                    "the writer lacks the field and the reader has no default",
                ));
            }
        }
        Ok(Plan { ops })
    }

    /// Decodes one body; all of `body` must be the record.
    pub fn decode<'a>(&self, body: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        let mut ev = Event::empty();
        self.decode_into(body, &mut ev)?;
        Ok(ev)
    }

    /// [`Plan::decode`] into `ev`, which is cleared first: a caller decoding many bodies
    /// reuses one event instead of building and moving a new one (with its metrics, about
    /// 1.5 KiB) per body. On an error `ev` holds what was read before it.
    pub fn decode_into<'a>(&self, body: &'a [u8], ev: &mut Event<'a>) -> Result<(), DecodeError> {
        ev.clear();
        let mut c = Cursor {
            buf: body,
            at: 0,
            values: 0,
        };
        for op in &self.ops {
            match op {
                Op::Read(t, r) => c.read_field(*t, r, ev)?,
                Op::Skip(s) => c.skip(s)?,
            }
        }
        match body.len() - c.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// How the writer's `w` is read for a reader field of kind `kind`.
fn resolve(w: &Schema, kind: Kind, path: &str) -> Result<Read, PlanError> {
    if let Schema::Union(branches) = w {
        let reads: Vec<Result<Read, &'static str>> = branches
            .iter()
            .map(|b| resolve_plain(b, kind).ok_or(b.kind()))
            .collect();
        if reads.iter().all(Result::is_err) {
            return Err(mismatch(
                path,
                format!(
                    "no branch of the writer's union can be read as the reader's {}",
                    kind.name()
                ),
            ));
        }
        return Ok(Read::Union(reads));
    }
    resolve_plain(w, kind).ok_or_else(|| {
        mismatch(
            path,
            format!(
                "the writer's {} cannot be read as the reader's {}",
                w.kind(),
                kind.name()
            ),
        )
    })
}

fn resolve_plain(w: &Schema, kind: Kind) -> Option<Read> {
    use Kind as K;
    use Schema as S;
    Some(match (kind, w) {
        (K::Str | K::OptStr, S::String | S::Bytes) => Read::Str,
        (K::OptStr | K::OptDouble, S::Null) => Read::Null,
        (K::Long | K::OptDouble | K::Double, S::Int) => Read::Int,
        (K::Long | K::OptDouble | K::Double, S::Long) => Read::Long,
        (K::OptDouble | K::Double, S::Float) => Read::Float,
        (K::OptDouble | K::Double, S::Double) => Read::Double,
        (K::MetricMap, S::Map(values)) => Read::Map(Box::new(resolve(values, K::Double, "").ok()?)),
        _ => return None,
    })
}

fn skip_of(w: &Schema) -> Skip {
    match w {
        Schema::Null => Skip::Null,
        Schema::Boolean => Skip::Boolean,
        Schema::Int | Schema::Long => Skip::Varint,
        Schema::Float => Skip::Float,
        Schema::Double => Skip::Double,
        Schema::Bytes | Schema::String => Skip::Bytes,
        Schema::Enum { symbols, .. } => Skip::Enum(symbols.len()),
        Schema::Fixed { size, .. } => Skip::Fixed(*size),
        Schema::Array(items) => Skip::Array(Box::new(skip_of(items))),
        Schema::Map(values) => Skip::Map(Box::new(skip_of(values))),
        Schema::Union(branches) => Skip::Union(branches.iter().map(skip_of).collect()),
        Schema::Record { fields, .. } => Skip::Record(fields.iter().map(|f| skip_of(&f.schema)).collect()),
    }
}

/// One value read for a reader field.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    Str(&'a str),
    Long(i64),
    Double(f64),
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    values: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let out = self
            .buf
            .get(self.at..self.at.saturating_add(n))
            .ok_or(DecodeError::Truncated {
                at: self.at,
                needed: n.saturating_sub(self.left()),
            })?;
        self.at += n;
        Ok(out)
    }

    fn count_values(&mut self, n: usize) -> Result<(), DecodeError> {
        self.values = self.values.saturating_add(n);
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

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.at;
        let raw = self.bytes()?;
        std::str::from_utf8(raw).map_err(|_| DecodeError::BadUtf8(at))
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
    /// count is followed by the block's size in bytes, returned too (checked against the
    /// bytes left). Every item is at least one value, so the budget bounds the count.
    fn block(&mut self) -> Result<(usize, Option<usize>), DecodeError> {
        let at = self.at;
        let count = self.long()?;
        let size = if count < 0 { Some(self.len()?) } else { None };
        let n = usize::try_from(count.unsigned_abs())
            .ok()
            .filter(|n| *n <= VALUES_MAX)
            .ok_or(DecodeError::BadLength {
                at,
                len: count,
                left: self.left(),
            })?;
        self.count_values(n)?;
        Ok((n, size))
    }

    fn union_branch<'p, T>(&mut self, branches: &'p [T]) -> Result<&'p T, DecodeError> {
        let at = self.at;
        let index = self.long()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| branches.get(i))
            .ok_or(DecodeError::BadUnionIndex {
                at,
                index,
                branches: branches.len(),
            })
    }

    /// One scalar (not a map) for the field `field`.
    fn scalar(&mut self, r: &Read, field: &'static str) -> Result<Val<'a>, DecodeError> {
        Ok(match r {
            Read::Null => Val::Null,
            Read::Str => Val::Str(self.str()?),
            Read::Int => Val::Long(i64::from(self.int()?)),
            Read::Long => Val::Long(self.long()?),
            Read::Float => Val::Double(f64::from(self.float()?)),
            Read::Double => Val::Double(self.double()?),
            Read::Union(branches) => match self.union_branch(branches)? {
                Ok(b) => self.scalar(b, field)?,
                Err(branch) => return Err(DecodeError::Unreadable { field, branch }),
            },
            Read::Map(_) => return Err(DecodeError::Unreadable { field, branch: "map" }),
        })
    }

    fn read_field(&mut self, t: Target, r: &Read, ev: &mut Event<'a>) -> Result<(), DecodeError> {
        self.count_values(1)?;
        let field = t.name();
        if t == Target::Metrics {
            return self.metrics(r, ev);
        }
        let v = self.scalar(r, field)?;
        let unreadable = |branch| DecodeError::Unreadable { field, branch };
        match (t.kind(), v) {
            (Kind::Str, Val::Str(s)) => match t {
                Target::NodeId => ev.rim_node_id = s,
                _ => ev.status = s,
            },
            (Kind::OptStr, Val::Null | Val::Str(_)) => {
                let s = match v {
                    Val::Str(s) => Some(s),
                    _ => None,
                };
                match t {
                    Target::EventId => ev.event_id = s,
                    _ => ev.source_topic = s,
                }
            }
            (Kind::Long, Val::Long(x)) => ev.timestamp = x,
            (Kind::OptDouble, Val::Null | Val::Long(_) | Val::Double(_)) => {
                let x = match v {
                    Val::Long(x) => Some(x as f64),
                    Val::Double(x) => Some(x),
                    _ => None,
                };
                match t {
                    Target::Price => ev.price = x,
                    Target::Volume => ev.volume = x,
                    _ => ev.stress = x,
                }
            }
            // The plan only pairs kinds with the reads above; anything else is an error,
            // not a panic, should that ever change.
            _ => return Err(unreadable("unexpected")),
        }
        Ok(())
    }

    fn metrics(&mut self, r: &Read, ev: &mut Event<'a>) -> Result<(), DecodeError> {
        const FIELD: &str = "critical_metrics";
        let values = match r {
            Read::Map(values) => values,
            Read::Union(branches) => match self.union_branch(branches)? {
                Ok(Read::Map(values)) => values,
                Ok(_) => {
                    return Err(DecodeError::Unreadable {
                        field: FIELD,
                        branch: "unexpected",
                    })
                }
                Err(branch) => return Err(DecodeError::Unreadable { field: FIELD, branch }),
            },
            _ => {
                return Err(DecodeError::Unreadable {
                    field: FIELD,
                    branch: "unexpected",
                })
            }
        };
        loop {
            let (n, _) = self.block()?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                let name = self.str()?;
                let value = match self.scalar(values, FIELD)? {
                    Val::Long(x) => x as f64,
                    Val::Double(x) => x,
                    Val::Null => {
                        return Err(DecodeError::Unreadable {
                            field: FIELD,
                            branch: "null",
                        })
                    }
                    Val::Str(_) => {
                        return Err(DecodeError::Unreadable {
                            field: FIELD,
                            branch: "string",
                        })
                    }
                };
                if !ev.critical_metrics.push(name, value) {
                    return Err(DecodeError::TooManyMetrics(METRICS_MAX));
                }
            }
        }
    }

    /// Skips one value (the recursion is as deep as the schema, bounded at compile).
    fn skip(&mut self, s: &Skip) -> Result<(), DecodeError> {
        self.count_values(1)?;
        match s {
            Skip::Null => {}
            Skip::Boolean => {
                let at = self.at;
                let value = self.take(1)?[0];
                if value > 1 {
                    return Err(DecodeError::BadBoolean { at, value });
                }
            }
            Skip::Varint => {
                self.long()?;
            }
            Skip::Enum(symbols) => {
                let at = self.at;
                let index = self.long()?;
                if !usize::try_from(index).is_ok_and(|i| i < *symbols) {
                    return Err(DecodeError::BadEnumIndex {
                        at,
                        index,
                        symbols: *symbols,
                    });
                }
            }
            Skip::Float => {
                self.take(4)?;
            }
            Skip::Double => {
                self.take(8)?;
            }
            Skip::Bytes => {
                self.bytes()?;
            }
            Skip::Fixed(n) => {
                self.take(*n)?;
            }
            Skip::Array(items) => self.skip_blocks(items, false)?,
            Skip::Map(values) => self.skip_blocks(values, true)?,
            Skip::Union(branches) => {
                let b = self.union_branch(branches)?;
                self.skip(b)?;
            }
            Skip::Record(fields) => {
                for f in fields {
                    self.skip(f)?;
                }
            }
        }
        Ok(())
    }

    /// Array or map blocks; a block that gives its size in bytes is jumped over whole.
    fn skip_blocks(&mut self, item: &Skip, keyed: bool) -> Result<(), DecodeError> {
        loop {
            let (n, size) = self.block()?;
            if n == 0 {
                return Ok(());
            }
            if let Some(bytes) = size {
                self.take(bytes)?;
                continue;
            }
            for _ in 0..n {
                if keyed {
                    self.bytes()?;
                }
                self.skip(item)?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
