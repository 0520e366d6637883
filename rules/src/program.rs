//! A rule's compiled condition: type checking, lowering the tree into a flat node array with
//! interned leaf labels, and the evaluator.
//!
//! The flat form is a `Box<[Node]>` where every child precedes its parent and the root is
//! last. Nodes are `Copy` and hold everything they need (metric hashes, windows, label
//! indexes), so evaluation is a walk over one contiguous slice: no allocation, no string, and
//! recursion bounded by the parser's height limit.

use crate::ast::{canonical, field_text, BinOp, Expr, Kind, SeriesName};
use crate::hash::name_hash;
use crate::lex::ExprError;
use crate::model::{Evidence, Field, Inputs, MetricKey, Series, EVIDENCE_MAX};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Node {
    Const(f64),
    Field(Field, u16),
    Metric(MetricKey, u16),
    Change(Series, u64, u16),
    PctChange(Series, u64, u16),
    Zscore(Series, u16),
    Ewma(Series, u16),
    Abs(u32),
    Neg(u32),
    Arith(Arith, u32, u32),
    Cmp(Cmp, u32, u32),
    /// `status == "S"` (`eq`) or `status != "S"`.
    Status {
        hash: u64,
        eq: bool,
        label: u16,
    },
    Stale {
        ms: u64,
        label: u16,
    },
    Not(u32),
    And(u32, u32),
    Or(u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A compiled condition plus what it reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Program {
    nodes: Box<[Node]>,
    pub labels: Vec<String>,
    pub series: Vec<Series>,
    pub uses_stale: bool,
    /// Canonical text of the whole condition (versioning compares it).
    pub canonical: String,
}

/// Type-checks `e` (it must be a condition) and lowers it.
pub(crate) fn lower(e: &Expr) -> Result<Program, ExprError> {
    let mut b = Builder::default();
    b.bool(e)?;
    Ok(Program {
        nodes: b.nodes.into_boxed_slice(),
        labels: b.labels,
        series: b.series,
        uses_stale: b.uses_stale,
        canonical: canonical(e),
    })
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    labels: Vec<String>,
    series: Vec<Series>,
    uses_stale: bool,
}

fn series_of(s: &SeriesName) -> Series {
    match s {
        SeriesName::Price => Series::Price,
        SeriesName::Volume => Series::Volume,
        SeriesName::Stress => Series::Stress,
        SeriesName::Metric(m) => Series::Metric(MetricKey(name_hash(m))),
    }
}

const NOT_A_CONDITION: &str = "expected a condition here, found a number; compare it, e.g. metric.temp > 80";
const NOT_A_NUMBER: &str = "expected a number here, found a condition";
const STATUS_USE: &str = "status can only be compared with == or != against a string, like status == \"DEGRADED\"";
const STRING_USE: &str = "a string can only be compared with status, like status == \"DEGRADED\"";

impl Builder {
    fn push(&mut self, n: Node) -> u32 {
        self.nodes.push(n);
        // At most 2^NEST_MAX-ish nodes but bounded far lower by the 4 KiB expression size.
        u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX)
    }

    /// Interns a leaf's label; refuses a rule reading more than [`EVIDENCE_MAX`] inputs.
    fn label(&mut self, e: &Expr, text: String) -> Result<u16, ExprError> {
        if let Some(i) = self.labels.iter().position(|l| *l == text) {
            return Ok(i as u16);
        }
        if self.labels.len() >= EVIDENCE_MAX {
            return Err(ExprError::new(
                e.pos,
                format!("a rule may read at most {EVIDENCE_MAX} distinct inputs; this is one more"),
            ));
        }
        self.labels.push(text);
        Ok((self.labels.len() - 1) as u16)
    }

    fn note_series(&mut self, s: Series) {
        if !self.series.contains(&s) {
            self.series.push(s);
        }
    }

    /// Lowers a condition.
    fn bool(&mut self, e: &Expr) -> Result<u32, ExprError> {
        match &e.kind {
            Kind::Not(x) => {
                let c = self.bool(x)?;
                Ok(self.push(Node::Not(c)))
            }
            Kind::Stale(ms) => {
                self.uses_stale = true;
                let label = self.label(e, canonical(e))?;
                Ok(self.push(Node::Stale { ms: *ms, label }))
            }
            Kind::Bin { op, op_pos, l, r } if op.is_logic() => {
                let (a, b) = (self.bool(l)?, self.bool(r)?);
                Ok(self.push(if *op == BinOp::And {
                    Node::And(a, b)
                } else {
                    Node::Or(a, b)
                }))
            }
            Kind::Bin { op, op_pos, l, r } if op.is_cmp() => self.compare(e, *op, *op_pos, l, r),
            Kind::Status => Err(ExprError::new(e.pos, STATUS_USE)),
            Kind::Str(_) => Err(ExprError::new(e.pos, STRING_USE)),
            _ => Err(ExprError::new(e.pos, NOT_A_CONDITION)),
        }
    }

    fn compare(&mut self, whole: &Expr, op: BinOp, op_pos: usize, l: &Expr, r: &Expr) -> Result<u32, ExprError> {
        let (ls, rs) = (matches!(l.kind, Kind::Status), matches!(r.kind, Kind::Status));
        if ls || rs {
            let other = if ls { r } else { l };
            let Kind::Str(s) = &other.kind else {
                return Err(ExprError::new(other.pos, STATUS_USE));
            };
            let eq = match op {
                BinOp::Eq => true,
                BinOp::Ne => false,
                _ => return Err(ExprError::new(op_pos, STATUS_USE)),
            };
            let label = self.label(whole, format!("status {} {}", op.text(), canonical(other)))?;
            return Ok(self.push(Node::Status {
                hash: name_hash(s),
                eq,
                label,
            }));
        }
        let (a, b) = (self.num(l)?, self.num(r)?);
        Ok(self.push(Node::Cmp(cmp_of(op), a, b)))
    }

    /// Lowers a number.
    fn num(&mut self, e: &Expr) -> Result<u32, ExprError> {
        if e.is_bool() {
            return Err(ExprError::new(e.pos, NOT_A_NUMBER));
        }
        let node = match &e.kind {
            Kind::Num(n) => Node::Const(*n),
            Kind::Field(f) => Node::Field(*f, self.label(e, field_text(*f).to_owned())?),
            Kind::Metric(m) => Node::Metric(MetricKey(name_hash(m)), self.label(e, canonical(e))?),
            Kind::Change { series, ms, pct } => {
                let s = series_of(series);
                self.note_series(s);
                let label = self.label(e, canonical(e))?;
                if *pct {
                    Node::PctChange(s, *ms, label)
                } else {
                    Node::Change(s, *ms, label)
                }
            }
            Kind::Zscore(series) | Kind::Ewma(series) => {
                let s = series_of(series);
                self.note_series(s);
                let label = self.label(e, canonical(e))?;
                if matches!(e.kind, Kind::Zscore(_)) {
                    Node::Zscore(s, label)
                } else {
                    Node::Ewma(s, label)
                }
            }
            Kind::Abs(x) => Node::Abs(self.num(x)?),
            Kind::Neg(x) => Node::Neg(self.num(x)?),
            Kind::Bin { op, l, r, .. } => {
                let (a, b) = (self.num(l)?, self.num(r)?);
                Node::Arith(arith_of(*op), a, b)
            }
            Kind::Status => return Err(ExprError::new(e.pos, STATUS_USE)),
            Kind::Str(_) => return Err(ExprError::new(e.pos, STRING_USE)),
            // is_bool() caught these above.
            Kind::Not(_) | Kind::Stale(_) => return Err(ExprError::new(e.pos, NOT_A_NUMBER)),
        };
        Ok(self.push(node))
    }
}

fn cmp_of(op: BinOp) -> Cmp {
    match op {
        BinOp::Lt => Cmp::Lt,
        BinOp::Le => Cmp::Le,
        BinOp::Gt => Cmp::Gt,
        BinOp::Ge => Cmp::Ge,
        BinOp::Eq => Cmp::Eq,
        _ => Cmp::Ne,
    }
}

fn arith_of(op: BinOp) -> Arith {
    match op {
        BinOp::Add => Arith::Add,
        BinOp::Sub => Arith::Sub,
        BinOp::Mul => Arith::Mul,
        _ => Arith::Div,
    }
}

/// Unknown unless finite: NaN and ±inf never reach a comparison.
#[inline]
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Program {
    /// Evaluates the condition: `Some(true)`, `Some(false)` or `None` (unknown).
    #[inline]
    pub(crate) fn eval<I: Inputs>(&self, inputs: &I, ev: &mut Evidence) -> Option<bool> {
        let root = self.nodes.len().checked_sub(1)?;
        self.truth(root as u32, inputs, ev)
    }

    /// Kleene three-valued logic; `and`/`or` short-circuit on a decisive left side.
    fn truth<I: Inputs>(&self, i: u32, inp: &I, ev: &mut Evidence) -> Option<bool> {
        match self.nodes[i as usize] {
            Node::Cmp(op, a, b) => {
                let x = self.num(a, inp, ev)?;
                let y = self.num(b, inp, ev)?;
                Some(compare(op, x, y))
            }
            Node::And(a, b) => match self.truth(a, inp, ev) {
                Some(false) => Some(false),
                l => match (l, self.truth(b, inp, ev)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), r) => r,
                    _ => None,
                },
            },
            Node::Or(a, b) => match self.truth(a, inp, ev) {
                Some(true) => Some(true),
                l => match (l, self.truth(b, inp, ev)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), r) => r,
                    _ => None,
                },
            },
            Node::Not(a) => self.truth(a, inp, ev).map(|t| !t),
            Node::Status { hash, eq, label } => {
                let holds = (inp.status_hash() == hash) == eq;
                ev.push(label, Some(if holds { 1.0 } else { 0.0 }));
                Some(holds)
            }
            Node::Stale { ms, label } => {
                // Outside a sweep there is no silence to measure: false, not unknown, so
                // `not stale(..)` holds on ordinary events.
                let silent = inp.silent_ms();
                ev.push(label, silent.map(|s| s as f64));
                Some(silent.is_some_and(|s| s >= ms))
            }
            _ => None,
        }
    }

    fn num<I: Inputs>(&self, i: u32, inp: &I, ev: &mut Evidence) -> Option<f64> {
        match self.nodes[i as usize] {
            Node::Const(c) => Some(c),
            Node::Field(f, label) => leaf(ev, label, inp.field(f)),
            Node::Metric(k, label) => leaf(ev, label, inp.metric(k)),
            Node::Change(s, ms, label) => leaf(ev, label, inp.change(s, ms).and_then(|(t, n)| finite(n - t))),
            Node::PctChange(s, ms, label) => leaf(ev, label, inp.change(s, ms).and_then(pct)),
            Node::Zscore(s, label) => leaf(ev, label, inp.zscore(s)),
            Node::Ewma(s, label) => leaf(ev, label, inp.ewma(s)),
            Node::Abs(a) => self.num(a, inp, ev).map(f64::abs),
            Node::Neg(a) => self.num(a, inp, ev).map(|x| -x),
            Node::Arith(op, a, b) => {
                let x = self.num(a, inp, ev)?;
                let y = self.num(b, inp, ev)?;
                arith(op, x, y)
            }
            _ => None,
        }
    }
}

/// Records a leaf read; a non-finite input counts as unknown.
#[inline]
fn leaf(ev: &mut Evidence, label: u16, v: Option<f64>) -> Option<f64> {
    let v = v.and_then(finite);
    ev.push(label, v);
    v
}

fn pct((then, now): (f64, f64)) -> Option<f64> {
    if then == 0.0 {
        return None;
    }
    finite((now - then) / then.abs() * 100.0)
}

#[inline]
fn arith(op: Arith, x: f64, y: f64) -> Option<f64> {
    let r = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div if y == 0.0 => return None,
        Arith::Div => x / y,
    };
    finite(r)
}

#[inline]
fn compare(op: Cmp, x: f64, y: f64) -> bool {
    match op {
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
        Cmp::Eq => x == y,
        Cmp::Ne => x != y,
    }
}
