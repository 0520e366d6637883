//! What the TOML and JSON readers share: the per-rule [`Draft`] they fill in, the validation
//! of each key's value, and the mapping from positions (file byte offsets, offsets inside a
//! `when` string) to the line/column a [`CompileError`] reports.
//!
//! Keeping this here means both formats refuse the same things with the same messages; the
//! readers only differ in how they find values and their positions.

use crate::duration::parse_duration_str;
use crate::error::CompileError;
use crate::glob::Glob;
use crate::lex::ExprError;
use crate::model::Severity;

/// Largest rule file accepted, in bytes.
pub const FILE_BYTES_MAX: usize = 1 << 20;
/// Longest `when` accepted, in bytes.
pub const WHEN_BYTES_MAX: usize = 4 << 10;
/// Most globs in one rule's `nodes`.
pub const GLOBS_MAX: usize = 64;
/// Longest rule id, in bytes.
pub const ID_BYTES_MAX: usize = 64;

/// A 1-based (line, column) in the file.
pub(crate) type LineCol = (u32, u32);

/// How to turn a byte offset inside a `when` string into an error position.
#[derive(Clone, Debug)]
pub(crate) enum WhenLoc {
    /// TOML. `exact` is the file offset of the string's first byte when the raw text in the
    /// file equals the parsed string (no escapes), so offsets map 1:1; otherwise errors point
    /// at `start` (the opening quote) and name the position inside the condition.
    Toml { exact: Option<usize>, start: LineCol },
    /// JSON: no file line; the column is counted inside the string.
    Json,
}

/// One rule as read from the file: every valid key, plus every problem found so far.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    /// `rule[i]`.
    pub path: String,
    /// Where the rule starts (TOML only).
    pub loc: Option<LineCol>,
    pub id: Option<(String, Option<LineCol>)>,
    pub nodes: Option<(Vec<String>, Vec<Glob>)>,
    pub when: Option<(String, WhenLoc)>,
    pub severity: Option<Severity>,
    pub cooldown_ms: u64,
    pub errors: Vec<CompileError>,
}

/// A value as the shared validation sees it, whatever the format.
pub(crate) enum Val<'a> {
    Str(&'a str),
    /// An array whose items are all strings, each with its position.
    StrArray(Vec<(&'a str, Option<LineCol>)>),
    /// Anything else, by type name (for the message).
    Other(&'static str),
}

pub(crate) const KEYS: &str = "id, nodes, when, severity, cooldown";

impl Draft {
    pub(crate) fn new(index: usize, loc: Option<LineCol>) -> Self {
        Self {
            path: format!("rule[{index}]"),
            loc,
            ..Self::default()
        }
    }

    pub(crate) fn error(&mut self, key: &str, loc: Option<LineCol>, message: impl Into<String>) {
        let path = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        let mut e = CompileError::new(path, message);
        if let Some((l, c)) = loc {
            e = e.at(l, c);
        }
        self.errors.push(e);
    }

    /// Validates and stores one key. `when_loc` is only used for `when`.
    pub(crate) fn apply(&mut self, key: &str, val: Val<'_>, loc: Option<LineCol>, when_loc: WhenLoc) {
        let r = match key {
            "id" => self.set_id(val, loc),
            "nodes" => self.set_nodes(val, loc),
            "when" => self.set_when(val, when_loc),
            "severity" => self.set_severity(val),
            "cooldown" => self.set_cooldown(val),
            _ => Err(format!("unknown key '{key}' in a rule; the keys are {KEYS}")),
        };
        if let Err(m) = r {
            self.error(key, loc, m);
        }
    }

    /// Reports each missing required key at the rule's position.
    pub(crate) fn check_required(&mut self) {
        let loc = self.loc;
        let missing = [
            ("id", self.id.is_none()),
            ("when", self.when.is_none()),
            ("severity", self.severity.is_none()),
        ];
        for (key, absent) in missing {
            // A present-but-invalid key already has its own error.
            let already = self.errors.iter().any(|e| e.path.ends_with(&format!(".{key}")));
            if absent && !already {
                self.error("", loc, format!("missing required key '{key}'"));
            }
        }
    }

    fn set_id(&mut self, val: Val<'_>, loc: Option<LineCol>) -> Result<(), String> {
        let s = want_str(val, "an id like \"temp-high\"")?;
        let ok = !s.is_empty()
            && s.len() <= ID_BYTES_MAX
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(format!("id {s:?} must match [A-Za-z0-9_.-]{{1,{ID_BYTES_MAX}}}"));
        }
        self.id = Some((s.to_owned(), loc));
        Ok(())
    }

    fn set_nodes(&mut self, val: Val<'_>, loc: Option<LineCol>) -> Result<(), String> {
        let items = match val {
            Val::Str(s) => vec![(s, loc)],
            Val::StrArray(v) => v,
            Val::Other(t) => return Err(format!("expected a glob string or an array of glob strings, found {t}")),
        };
        if items.is_empty() {
            return Err("nodes may not be an empty array; use \"*\" for every node".to_owned());
        }
        if items.len() > GLOBS_MAX {
            return Err(format!("nodes may list at most {GLOBS_MAX} globs"));
        }
        let mut texts = Vec::with_capacity(items.len());
        let mut globs = Vec::with_capacity(items.len());
        let mut bad = false;
        for (i, (s, item_loc)) in items.into_iter().enumerate() {
            match Glob::compile(s) {
                Ok(g) => globs.push(g),
                Err(m) => {
                    bad = true;
                    self.error(&format!("nodes[{i}]"), item_loc.or(loc), m);
                }
            }
            texts.push(s.to_owned());
        }
        if !bad {
            self.nodes = Some((texts, globs));
        }
        Ok(())
    }

    fn set_when(&mut self, val: Val<'_>, when_loc: WhenLoc) -> Result<(), String> {
        let s = want_str(val, "a condition string")?;
        self.when = Some((s.to_owned(), when_loc));
        Ok(())
    }

    fn set_severity(&mut self, val: Val<'_>) -> Result<(), String> {
        let s = want_str(val, "a severity")?;
        let sev = Severity::parse(s)
            .ok_or_else(|| format!("unknown severity {s:?}; use info, low, medium, high or critical"))?;
        self.severity = Some(sev);
        Ok(())
    }

    fn set_cooldown(&mut self, val: Val<'_>) -> Result<(), String> {
        let s = want_str(val, "a duration like \"10s\"")?;
        self.cooldown_ms = parse_duration_str(s)?;
        Ok(())
    }
}

fn want_str<'a>(val: Val<'a>, what: &str) -> Result<&'a str, String> {
    match val {
        Val::Str(s) => Ok(s),
        Val::StrArray(_) => Err(format!("expected {what}, found an array")),
        Val::Other(t) => Err(format!("expected {what}, found {t}")),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset inside a
/// character counts as that character; past the end, the end.
pub(crate) fn line_col(text: &str, offset: usize) -> LineCol {
    let mut line = 1u32;
    let mut col = 1u32;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line = line.saturating_add(1);
            col = 1;
        } else {
            col = col.saturating_add(1);
        }
    }
    (line, col)
}

/// Turns an error inside the `when` string into a file-level error.
pub(crate) fn when_error(file: &str, path: &str, when: &str, loc: &WhenLoc, e: ExprError) -> CompileError {
    let path = format!("{path}.when");
    match loc {
        WhenLoc::Toml { exact: Some(base), .. } => {
            let (l, c) = line_col(file, base.saturating_add(e.pos));
            CompileError::new(path, e.message).at(l, c)
        }
        WhenLoc::Toml { exact: None, start } => {
            let (el, ec) = line_col(when, e.pos);
            let message = format!("{} (at line {el}, column {ec} of the condition)", e.message);
            CompileError::new(path, message).at(start.0, start.1)
        }
        WhenLoc::Json => {
            let mut err = CompileError::new(path, e.message);
            let col = when.get(..e.pos.min(when.len())).map_or(e.pos, |p| p.chars().count());
            err.column = Some(u32::try_from(col + 1).unwrap_or(u32::MAX));
            err
        }
    }
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_characters() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 2), (1, 3));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 8), (3, 1));
        assert_eq!(line_col(t, 100), (3, 2));
    }
}
