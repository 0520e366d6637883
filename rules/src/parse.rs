//! The expression parser: tokens → [`Expr`] tree, by recursive descent over the grammar in
//! `docs/rules.md`.
//!
//! It owns the syntax errors and two bounds: nesting (parentheses, `not`, unary `-`, call
//! arguments) and tree height both stop at [`NEST_MAX`], so neither this parser nor anything
//! that later walks the tree can overflow the stack. Window bounds are checked here too,
//! because here is where the duration's position is known.

use crate::ast::{BinOp, Expr, Kind, SeriesName};
use crate::duration::format_duration;
use crate::lex::{lex, ExprError, Tok, Token};
use crate::model::{Field, Limits};

/// Deepest nesting / tallest tree accepted.
pub const NEST_MAX: usize = 64;
/// Longest metric name, in bytes (the daemon's event limit).
pub const METRIC_NAME_MAX: usize = 64;

/// Parses a whole `when` expression.
pub(crate) fn parse(src: &str, limits: &Limits) -> Result<Expr, ExprError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        at: 0,
        last: 0,
        nest: 0,
        limits,
    };
    if p.peek() == &Tok::Eof {
        return Err(ExprError::new(0, "the condition is empty"));
    }
    let e = p.or()?;
    match p.peek() {
        Tok::Eof => Ok(e),
        t if is_cmp(t) => Err(p.err_here("comparisons do not chain; join them with 'and'")),
        t => {
            let found = t.describe();
            Err(p.err_here(format!(
                "expected 'and', 'or' or the end of the condition, found {found}"
            )))
        }
    }
}

fn is_cmp(t: &Tok<'_>) -> bool {
    cmp_op(t).is_some()
}

fn cmp_op(t: &Tok<'_>) -> Option<BinOp> {
    Some(match t {
        Tok::Lt => BinOp::Lt,
        Tok::Le => BinOp::Le,
        Tok::Gt => BinOp::Gt,
        Tok::Ge => BinOp::Ge,
        Tok::EqEq => BinOp::Eq,
        Tok::Ne => BinOp::Ne,
        _ => return None,
    })
}

struct Parser<'a, 'l> {
    toks: Vec<Token<'a>>,
    at: usize,
    /// Start of the token most recently consumed.
    last: usize,
    nest: usize,
    limits: &'l Limits,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> &Tok<'a> {
        self.toks.get(self.at).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).or(self.toks.last()).map_or(0, |t| t.start)
    }

    fn bump(&mut self) -> Tok<'a> {
        let t = self.peek().clone();
        self.last = self.pos();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn err_here(&self, msg: impl Into<String>) -> ExprError {
        ExprError::new(self.pos(), msg)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if *s == w)
    }

    /// Enters one level of nesting; refuses past [`NEST_MAX`].
    fn enter(&mut self) -> Result<(), ExprError> {
        self.nest += 1;
        if self.nest > NEST_MAX {
            return Err(self.err_here(format!("the condition nests deeper than {NEST_MAX} levels")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nest -= 1;
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.and()?;
        while self.is_word("or") {
            let op_pos = self.pos();
            self.bump();
            let r = self.and()?;
            l = bin(BinOp::Or, op_pos, l, r)?;
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.unary()?;
        while self.is_word("and") {
            let op_pos = self.pos();
            self.bump();
            let r = self.unary()?;
            l = bin(BinOp::And, op_pos, l, r)?;
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if !self.is_word("not") {
            return self.cmp();
        }
        let pos = self.pos();
        self.enter()?;
        self.bump();
        let inner = self.unary()?;
        self.leave();
        wrap(Kind::Not, pos, inner)
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let l = self.sum()?;
        let Some(op) = cmp_op(self.peek()) else {
            return Ok(l);
        };
        let op_pos = self.pos();
        self.bump();
        let r = self.sum()?;
        bin(op, op_pos, l, r)
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.prod()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(l),
            };
            let op_pos = self.pos();
            self.bump();
            let r = self.prod()?;
            l = bin(op, op_pos, l, r)?;
        }
    }

    fn prod(&mut self) -> Result<Expr, ExprError> {
        let mut l = self.neg()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                _ => return Ok(l),
            };
            let op_pos = self.pos();
            self.bump();
            let r = self.neg()?;
            l = bin(op, op_pos, l, r)?;
        }
    }

    fn neg(&mut self) -> Result<Expr, ExprError> {
        if self.peek() != &Tok::Minus {
            return self.atom();
        }
        let pos = self.pos();
        self.enter()?;
        self.bump();
        let inner = self.neg()?;
        self.leave();
        wrap(Kind::Neg, pos, inner)
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Num(n) => {
                self.bump();
                Ok(Expr::leaf(Kind::Num(n), pos))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::leaf(Kind::Str(s), pos))
            }
            Tok::LParen => self.paren(),
            Tok::Ident(w) => self.word(w),
            Tok::Dur(_) => {
                Err(self.err_here("a duration like 5s can only be the window of change(), pct_change() or stale()"))
            }
            t => Err(self.err_here(format!("expected a value, found {}", t.describe()))),
        }
    }

    fn paren(&mut self) -> Result<Expr, ExprError> {
        let pos = self.pos();
        self.enter()?;
        self.bump();
        let mut e = self.or()?;
        self.leave();
        if self.peek() != &Tok::RParen {
            let found = self.peek().describe();
            return Err(self.err_here(format!("expected ')' to close '(', found {found}")));
        }
        self.bump();
        // Point later (type) errors about the group at its '('.
        e.pos = pos;
        Ok(e)
    }

    fn word(&mut self, w: &'a str) -> Result<Expr, ExprError> {
        let pos = self.pos();
        let field = |f| Ok(Expr::leaf(Kind::Field(f), pos));
        match w {
            "price" | "volume" | "stress" | "gap" | "status" => {
                self.bump();
                match w {
                    "price" => field(Field::Price),
                    "volume" => field(Field::Volume),
                    "stress" => field(Field::Stress),
                    "gap" => field(Field::Gap),
                    _ => Ok(Expr::leaf(Kind::Status, pos)),
                }
            }
            "metric" => self.metric().map(|m| Expr::leaf(Kind::Metric(m), pos)),
            "change" | "pct_change" => self.change(w == "pct_change"),
            "zscore" | "ewma" => self.stat(w),
            "abs" => self.abs(),
            "stale" => self.stale(),
            "and" | "or" | "not" => Err(self.err_here(format!("expected a value before '{w}'"))),
            _ => Err(self.err_here(self.unknown_word(w))),
        }
    }

    fn unknown_word(&self, w: &str) -> String {
        let is_call = self.toks.get(self.at + 1).is_some_and(|t| t.tok == Tok::LParen);
        if is_call {
            return format!(
                "unknown function '{w}'; the functions are change, pct_change, zscore, ewma, abs and stale"
            );
        }
        format!("unknown name '{w}'; expected price, volume, stress, gap, status, metric.NAME or a function")
    }

    /// After `metric`: `.name` or `["name"]`.
    fn metric(&mut self) -> Result<String, ExprError> {
        self.bump();
        let name_pos = self.pos();
        let name = match self.bump() {
            Tok::Dot => match self.bump() {
                Tok::Ident(s) => s.to_owned(),
                _ => {
                    return Err(ExprError::new(
                        self.prev_pos(),
                        "expected a metric name after 'metric.'",
                    ))
                }
            },
            Tok::LBracket => self.bracket_name()?,
            _ => {
                return Err(ExprError::new(
                    name_pos,
                    "expected '.name' or '[\"name\"]' after 'metric'",
                ))
            }
        };
        if name.is_empty() || name.len() > METRIC_NAME_MAX {
            return Err(ExprError::new(
                name_pos,
                format!("a metric name must be 1 to {METRIC_NAME_MAX} bytes"),
            ));
        }
        Ok(name)
    }

    fn bracket_name(&mut self) -> Result<String, ExprError> {
        let Tok::Str(s) = self.bump() else {
            return Err(ExprError::new(
                self.prev_pos(),
                "expected a string like \"name\" after 'metric['",
            ));
        };
        if self.bump() != Tok::RBracket {
            return Err(ExprError::new(self.prev_pos(), "expected ']' after the metric name"));
        }
        Ok(s)
    }

    /// Position of the token just consumed.
    fn prev_pos(&self) -> usize {
        self.last
    }

    fn open(&mut self, f: &str) -> Result<(), ExprError> {
        self.bump();
        if self.peek() != &Tok::LParen {
            return Err(self.err_here(format!("expected '(' after {f}")));
        }
        self.bump();
        Ok(())
    }

    fn close(&mut self, f: &str) -> Result<(), ExprError> {
        if self.peek() != &Tok::RParen {
            let found = self.peek().describe();
            return Err(self.err_here(format!("expected ')' to close {f}(...), found {found}")));
        }
        self.bump();
        Ok(())
    }

    fn series(&mut self, f: &str) -> Result<SeriesName, ExprError> {
        let s = match self.peek() {
            Tok::Ident("price") => SeriesName::Price,
            Tok::Ident("volume") => SeriesName::Volume,
            Tok::Ident("stress") => SeriesName::Stress,
            Tok::Ident("metric") => return self.metric().map(SeriesName::Metric),
            _ => {
                return Err(self.err_here(format!(
                    "expected a series (price, volume, stress or metric.NAME) in {f}(...)"
                )))
            }
        };
        self.bump();
        Ok(s)
    }

    fn change(&mut self, pct: bool) -> Result<Expr, ExprError> {
        let pos = self.pos();
        let f = if pct { "pct_change" } else { "change" };
        self.open(f)?;
        let series = self.series(f)?;
        if self.peek() != &Tok::Comma {
            return Err(self.err_here(format!(
                "expected ',' and a window like 5s after the series in {f}(...)"
            )));
        }
        self.bump();
        let ms = self.window(f)?;
        self.close(f)?;
        Ok(Expr::leaf(Kind::Change { series, ms, pct }, pos))
    }

    /// A `change`/`pct_change` window, within the limits.
    fn window(&mut self, f: &str) -> Result<u64, ExprError> {
        let Tok::Dur(ms) = self.peek() else {
            return Err(self.err_here(format!("expected a duration like 5s after ',' in {f}(...)")));
        };
        let ms = *ms;
        let (lo, hi) = (self.limits.window_min_ms, self.limits.window_max_ms);
        if ms < lo || ms > hi {
            return Err(self.err_here(format!(
                "window {} is outside the allowed {} to {}",
                format_duration(ms),
                format_duration(lo),
                format_duration(hi)
            )));
        }
        self.bump();
        Ok(ms)
    }

    fn stat(&mut self, f: &str) -> Result<Expr, ExprError> {
        let pos = self.pos();
        self.open(f)?;
        let s = self.series(f)?;
        self.close(f)?;
        let kind = if f == "zscore" { Kind::Zscore(s) } else { Kind::Ewma(s) };
        Ok(Expr::leaf(kind, pos))
    }

    fn abs(&mut self) -> Result<Expr, ExprError> {
        let pos = self.pos();
        self.open("abs")?;
        self.enter()?;
        let inner = self.sum()?;
        self.leave();
        self.close("abs")?;
        wrap(Kind::Abs, pos, inner)
    }

    fn stale(&mut self) -> Result<Expr, ExprError> {
        let pos = self.pos();
        self.open("stale")?;
        let Tok::Dur(ms) = self.peek() else {
            return Err(self.err_here("expected a duration like 30s in stale(...)"));
        };
        let ms = *ms;
        if ms == 0 {
            return Err(self.err_here("stale(0s) would hold on every sweep; give a silence longer than 0"));
        }
        self.bump();
        self.close("stale")?;
        Ok(Expr::leaf(Kind::Stale(ms), pos))
    }
}

fn too_tall(pos: usize) -> ExprError {
    ExprError::new(pos, format!("the condition nests deeper than {NEST_MAX} levels"))
}

/// Builds a binary node, refusing a tree taller than [`NEST_MAX`] (long `a + b + c + …`
/// chains grow the tree without nesting parentheses).
fn bin(op: BinOp, op_pos: usize, l: Expr, r: Expr) -> Result<Expr, ExprError> {
    let depth = l.depth.max(r.depth) + 1;
    if usize::from(depth) > NEST_MAX {
        return Err(too_tall(op_pos));
    }
    let pos = l.pos;
    Ok(Expr {
        kind: Kind::Bin {
            op,
            op_pos,
            l: Box::new(l),
            r: Box::new(r),
        },
        pos,
        depth,
    })
}

fn wrap(make: fn(Box<Expr>) -> Kind, pos: usize, inner: Expr) -> Result<Expr, ExprError> {
    let depth = inner.depth + 1;
    if usize::from(depth) > NEST_MAX {
        return Err(too_tall(pos));
    }
    Ok(Expr {
        kind: make(Box::new(inner)),
        pos,
        depth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::canonical;

    fn canon(s: &str) -> String {
        match parse(s, &Limits::default()) {
            Ok(e) => canonical(&e),
            Err(e) => format!("error at {}: {}", e.pos, e.message),
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canon("metric.temp>80 and change( metric.temp ,5000ms )>10"),
            "metric.temp > 80 and change(metric.temp, 5s) > 10"
        );
        assert_eq!(
            canon("(a)"),
            "error at 1: unknown name 'a'; expected price, volume, stress, gap, status, metric.NAME or a function"
        );
        assert_eq!(canon("price - (volume - stress) > 0"), "price - (volume - stress) > 0");
        assert_eq!(canon("(price - volume) - stress > 0"), "price - volume - stress > 0");
        assert_eq!(
            canon("not (price > 1 or gap > 2) and stale(1m)"),
            "not (price > 1 or gap > 2) and stale(1m)"
        );
        assert_eq!(canon("metric[\"cpu load\"] > -1"), "metric[\"cpu load\"] > -1");
        assert_eq!(canon("metric[\"cpu\"] > 1"), "metric.cpu > 1");
        assert_eq!(
            canon("-(price * 2) < abs(volume / 2)"),
            "-(price * 2) < abs(volume / 2)"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let at = |s: &str| parse(s, &Limits::default()).err().map(|e| e.pos);
        assert_eq!(at("change(metric.temp, 5) > 1"), Some(20));
        assert_eq!(at("price > 1 > 2"), Some(10));
        assert_eq!(at("price >"), Some(7));
        assert_eq!(at("(price > 1"), Some(10));
        assert_eq!(at("change(price, 2m) > 1"), Some(14));
        assert_eq!(at("foo(1)"), Some(0));
        assert_eq!(at(""), Some(0));
        assert_eq!(at("price > 1 price"), Some(10));
        assert_eq!(at("metric. > 1"), Some(8));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}price{} > 1", "(".repeat(70), ")".repeat(70));
        assert!(parse(&deep, &Limits::default()).is_err());
        let ok = format!("{}price{} > 1", "(".repeat(60), ")".repeat(60));
        assert!(parse(&ok, &Limits::default()).is_ok());
        let chain = format!("price{} > 1", " + 1".repeat(80));
        assert!(parse(&chain, &Limits::default()).is_err());
        let nots = format!("{}price > 1", "not ".repeat(2000));
        assert!(parse(&nots, &Limits::default()).is_err());
    }
}
