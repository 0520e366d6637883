//! The expression lexer: `when` text → tokens with byte spans.
//!
//! It owns the spelling of literals (numbers, `500ms` durations, `"..."` strings with `\"`
//! and `\\` escapes) and turns the usual slips (`=`, `!`, `&&`, `||`) into messages that say
//! what to write instead.

use crate::duration::parse_duration;

/// A problem at a byte offset of the expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExprError {
    /// Byte offset in the `when` string.
    pub pos: usize,
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(pos: usize, message: impl Into<String>) -> Self {
        Self {
            pos,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok<'a> {
    Num(f64),
    /// A duration, in milliseconds.
    Dur(u64),
    Str(String),
    Ident(&'a str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

impl Tok<'_> {
    /// How the token reads in a message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Dur(ms) => format!("duration {}", crate::duration::format_duration(*ms)),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Eof => "the end of the expression".to_owned(),
            other => format!("'{}'", other.punct()),
        }
    }

    fn punct(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            _ => "?",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    /// Byte offset of the first character.
    pub start: usize,
}

/// Splits `src` into tokens, ending with [`Tok::Eof`] at `src.len()`.
pub(crate) fn lex(src: &str) -> Result<Vec<Token<'_>>, ExprError> {
    let mut lx = Lexer { src, pos: 0 };
    let mut out = Vec::new();
    loop {
        lx.skip_space();
        let start = lx.pos;
        let tok = lx.next_tok()?;
        let done = tok == Tok::Eof;
        out.push(Token { tok, start });
        if done {
            return Ok(out);
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + k).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Only ASCII bytes are taken, so both ends are char boundaries.
        self.src.get(start..self.pos).unwrap_or("")
    }

    fn next_tok(&mut self) -> Result<Tok<'a>, ExprError> {
        let Some(b) = self.peek() else {
            return Ok(Tok::Eof);
        };
        if b.is_ascii_digit() {
            return self.number();
        }
        if is_ident_start(b) {
            return Ok(Tok::Ident(self.take_while(is_ident_char)));
        }
        if b == b'"' {
            return self.string();
        }
        self.punct(b)
    }

    fn punct(&mut self, b: u8) -> Result<Tok<'a>, ExprError> {
        let start = self.pos;
        let next = self.peek_at(1);
        let (tok, len) = match (b, next) {
            (b'<', Some(b'=')) => (Tok::Le, 2),
            (b'>', Some(b'=')) => (Tok::Ge, 2),
            (b'=', Some(b'=')) => (Tok::EqEq, 2),
            (b'!', Some(b'=')) => (Tok::Ne, 2),
            (b'<', _) => (Tok::Lt, 1),
            (b'>', _) => (Tok::Gt, 1),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'[', _) => (Tok::LBracket, 1),
            (b']', _) => (Tok::RBracket, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'.', _) => (Tok::Dot, 1),
            (b'+', _) => (Tok::Plus, 1),
            (b'-', _) => (Tok::Minus, 1),
            (b'*', _) => (Tok::Star, 1),
            (b'/', _) => (Tok::Slash, 1),
            _ => return Err(ExprError::new(start, self.slip_message(b, next))),
        };
        self.pos += len;
        Ok(tok)
    }

    fn slip_message(&self, b: u8, next: Option<u8>) -> String {
        match (b, next) {
            (b'=', _) => "use '==' to compare".to_owned(),
            (b'!', _) => "use 'not' to negate (or '!=' to compare)".to_owned(),
            (b'&', Some(b'&')) => "use 'and' instead of '&&'".to_owned(),
            (b'|', Some(b'|')) => "use 'or' instead of '||'".to_owned(),
            (b'\'', _) => "strings use double quotes, like \"DEGRADED\"".to_owned(),
            _ => {
                let c = self.src.get(self.pos..).and_then(|s| s.chars().next()).unwrap_or('?');
                format!("unexpected character {c:?}")
            }
        }
    }

    /// `123`, `1.5`, `2e3`, or a duration `500ms` (an integer directly followed by a unit).
    fn number(&mut self) -> Result<Tok<'a>, ExprError> {
        let start = self.pos;
        let int = self.take_while(|b| b.is_ascii_digit());
        let mut whole = true;
        if self.peek() == Some(b'.') && self.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
            self.take_while(|b| b.is_ascii_digit());
            whole = false;
        }
        if self.exponent_follows() {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.take_while(|b| b.is_ascii_digit());
            whole = false;
        }
        let text = self.src.get(start..self.pos).unwrap_or("");
        if self.peek().is_some_and(is_ident_start) {
            let unit_pos = self.pos;
            let unit = self.take_while(is_ident_char);
            if !whole {
                return Err(ExprError::new(start, "a duration must be a whole number, like 1500ms"));
            }
            return parse_duration(int, unit)
                .map(Tok::Dur)
                .map_err(|m| ExprError::new(unit_pos, m));
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Tok::Num(n)),
            _ => Err(ExprError::new(start, format!("number {text} is not a finite number"))),
        }
    }

    fn exponent_follows(&self) -> bool {
        if !matches!(self.peek(), Some(b'e' | b'E')) {
            return false;
        }
        match self.peek_at(1) {
            Some(b) if b.is_ascii_digit() => true,
            Some(b'+' | b'-') => self.peek_at(2).is_some_and(|b| b.is_ascii_digit()),
            _ => false,
        }
    }

    /// `"..."`; the only escapes are `\"` and `\\`.
    fn string(&mut self) -> Result<Tok<'a>, ExprError> {
        let start = self.pos;
        let rest = self.src.get(start + 1..).unwrap_or("");
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return Ok(Tok::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    _ => {
                        return Err(ExprError::new(
                            start + 1 + i,
                            "the only escapes in a string are \\\" and \\\\",
                        ))
                    }
                },
                c => out.push(c),
            }
        }
        Err(ExprError::new(start, "string is not closed with '\"'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        lex(s)
            .map(|v| v.into_iter().map(|t| t.tok).collect())
            .unwrap_or_default()
    }

    #[test]
    fn lexes_literals() {
        assert_eq!(
            toks("metric.temp >= 1.5e2"),
            vec![
                Tok::Ident("metric"),
                Tok::Dot,
                Tok::Ident("temp"),
                Tok::Ge,
                Tok::Num(150.0),
                Tok::Eof
            ]
        );
        assert_eq!(toks("500ms 2m"), vec![Tok::Dur(500), Tok::Dur(120_000), Tok::Eof]);
        assert_eq!(toks(r#""a\"b\\c""#), vec![Tok::Str("a\"b\\c".into()), Tok::Eof]);
        assert_eq!(toks("1e"), Vec::<Tok<'_>>::new());
    }

    #[test]
    fn reports_positions() {
        let e = |s: &str| lex(s).err().map(|e| e.pos);
        assert_eq!(e("a = 1"), Some(2));
        assert_eq!(e("x && y"), Some(2));
        assert_eq!(e("\"abc"), Some(0));
        assert_eq!(e("5.5s"), Some(0));
        assert_eq!(e("5d"), Some(1));
        assert_eq!(e("1e999"), Some(0));
        assert_eq!(e("é"), Some(0));
        assert_eq!(e(r#""\n""#), Some(1));
    }
}
