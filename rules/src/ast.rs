//! The parsed, not yet type-checked expression tree, and its canonical text.
//!
//! The tree is short-lived (parse → lower → dropped) and its depth is bounded by the parser,
//! so the recursive functions here cannot overflow the stack. The canonical text is what
//! labels show and what versioning compares, so reformatting a rule does not bump its version.

use std::fmt::Write as _;

use crate::duration::format_duration;
use crate::model::Field;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::And => "and",
            Self::Or => "or",
        }
    }

    /// Binding strength, matching the grammar's levels.
    fn prec(self) -> u8 {
        match self {
            Self::Or => 1,
            Self::And => 2,
            Self::Lt | Self::Le | Self::Gt | Self::Ge | Self::Eq | Self::Ne => 4,
            Self::Add | Self::Sub => 5,
            Self::Mul | Self::Div => 6,
        }
    }

    pub(crate) fn is_cmp(self) -> bool {
        self.prec() == 4
    }

    pub(crate) fn is_logic(self) -> bool {
        matches!(self, Self::And | Self::Or)
    }
}

/// A series as written: `price`, `volume`, `stress` or a metric by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SeriesName {
    Price,
    Volume,
    Stress,
    Metric(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Num(f64),
    Str(String),
    Field(Field),
    Status,
    Metric(String),
    Change {
        series: SeriesName,
        ms: u64,
        pct: bool,
    },
    Zscore(SeriesName),
    Ewma(SeriesName),
    Abs(Box<Expr>),
    Stale(u64),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin {
        op: BinOp,
        op_pos: usize,
        l: Box<Expr>,
        r: Box<Expr>,
    },
}

/// A node and the byte offset where it starts in the `when` string.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Expr {
    pub kind: Kind,
    pub pos: usize,
    /// Height of this subtree (a leaf is 1); bounded by the parser.
    pub depth: u16,
}

impl Expr {
    pub(crate) fn leaf(kind: Kind, pos: usize) -> Self {
        Self { kind, pos, depth: 1 }
    }

    /// Is this, syntactically, a condition rather than a value?
    pub(crate) fn is_bool(&self) -> bool {
        match &self.kind {
            Kind::Not(_) | Kind::Stale(_) => true,
            Kind::Bin { op, .. } => op.is_cmp() || op.is_logic(),
            _ => false,
        }
    }

    fn prec(&self) -> u8 {
        match &self.kind {
            Kind::Bin { op, .. } => op.prec(),
            Kind::Not(_) => 3,
            Kind::Neg(_) => 7,
            _ => 8,
        }
    }
}

/// `metric.name` when the name is an identifier, else `metric["..."]` with escapes.
pub(crate) fn metric_text(name: &str) -> String {
    let ident = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ident {
        return format!("metric.{name}");
    }
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    format!("metric[\"{escaped}\"]")
}

pub(crate) fn series_text(s: &SeriesName) -> String {
    match s {
        SeriesName::Price => "price".to_owned(),
        SeriesName::Volume => "volume".to_owned(),
        SeriesName::Stress => "stress".to_owned(),
        SeriesName::Metric(m) => metric_text(m),
    }
}

pub(crate) fn field_text(f: Field) -> &'static str {
    match f {
        Field::Price => "price",
        Field::Volume => "volume",
        Field::Stress => "stress",
        Field::Gap => "gap",
    }
}

fn string_text(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The canonical text of a leaf or of a whole expression: single spaces around operators,
/// `, ` between arguments, durations in their largest exact unit, minimal parentheses.
pub(crate) fn canonical(e: &Expr) -> String {
    let mut out = String::new();
    print(e, &mut out);
    out
}

fn print(e: &Expr, out: &mut String) {
    match &e.kind {
        Kind::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Kind::Str(s) => out.push_str(&string_text(s)),
        Kind::Field(f) => out.push_str(field_text(*f)),
        Kind::Status => out.push_str("status"),
        Kind::Metric(m) => out.push_str(&metric_text(m)),
        Kind::Change { series, ms, pct } => {
            let name = if *pct { "pct_change" } else { "change" };
            let _ = write!(out, "{name}({}, {})", series_text(series), format_duration(*ms));
        }
        Kind::Zscore(s) => {
            let _ = write!(out, "zscore({})", series_text(s));
        }
        Kind::Ewma(s) => {
            let _ = write!(out, "ewma({})", series_text(s));
        }
        Kind::Abs(x) => {
            out.push_str("abs(");
            print(x, out);
            out.push(')');
        }
        Kind::Stale(ms) => {
            let _ = write!(out, "stale({})", format_duration(*ms));
        }
        Kind::Neg(x) => {
            out.push('-');
            print_child(x, 7, out);
        }
        Kind::Not(x) => {
            out.push_str("not ");
            print_child(x, 3, out);
        }
        Kind::Bin { op, l, r, .. } => print_bin(*op, l, r, out),
    }
}

fn print_bin(op: BinOp, l: &Expr, r: &Expr, out: &mut String) {
    let p = op.prec();
    // Left-associative: the left child may sit at the same level, the right one may not;
    // comparisons do not chain, so both of their sides must bind tighter.
    let left_min = if op.is_cmp() { p + 1 } else { p };
    print_child(l, left_min, out);
    let _ = write!(out, " {} ", op.text());
    print_child(r, p + 1, out);
}

fn print_child(e: &Expr, min_prec: u8, out: &mut String) {
    if e.prec() < min_prec {
        out.push('(');
        print(e, out);
        out.push(')');
    } else {
        print(e, out);
    }
}
