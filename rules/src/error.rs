//! Why a rule file was refused: [`CompileError`] (one problem, with its position) and
//! [`CompileErrors`] (every problem found in the file, at least one).

use std::fmt;

use thiserror::Error;

/// One problem in a rule file.
///
/// `line`/`column` are 1-based positions in the file (columns count characters). For JSON
/// expression errors there is no file line: `column` is then the 1-based column inside the
/// `when` string. `path` names the value, e.g. `rule[2].when` (rule indexes are 0-based);
/// it is empty for whole-file problems such as syntax errors.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct CompileError {
    /// 1-based line in the file, when known.
    pub line: Option<u32>,
    /// 1-based column (in the file, or in the `when` string when `line` is `None`).
    pub column: Option<u32>,
    /// The value at fault, e.g. `rule[2].when`; empty for the whole file.
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, line: u32, column: u32) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for CompileError {
    /// `line 7, column 23 (rule[2].when): message`, or `rule[3].when, column 12: message`
    /// without a file line, or `rule[1]: message` without any position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column, self.path.is_empty()) {
            (Some(l), Some(c), true) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), Some(c), false) => write!(f, "line {l}, column {c} ({}): ", self.path)?,
            (Some(l), None, true) => write!(f, "line {l}: ")?,
            (Some(l), None, false) => write!(f, "line {l} ({}): ", self.path)?,
            (None, Some(c), false) => write!(f, "{}, column {c}: ", self.path)?,
            (None, Some(c), true) => write!(f, "column {c}: ")?,
            (None, None, false) => write!(f, "{}: ", self.path)?,
            (None, None, true) => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a rule file; never empty. Displays one problem per line.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct CompileErrors(Vec<CompileError>);

impl CompileErrors {
    /// Wraps `errors`; `None` when there are none (the file compiled).
    pub(crate) fn from_vec(errors: Vec<CompileError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self(errors))
    }

    pub(crate) fn one(e: CompileError) -> Self {
        Self(vec![e])
    }

    /// The problems, in file order.
    pub fn errors(&self) -> &[CompileError] {
        &self.0
    }

    /// The first problem.
    pub fn first(&self) -> &CompileError {
        // Never empty by construction; the fallback keeps this total anyway.
        static NONE: CompileError = CompileError {
            line: None,
            column: None,
            path: String::new(),
            message: String::new(),
        };
        self.0.first().unwrap_or(&NONE)
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, owned.
    pub fn into_vec(self) -> Vec<CompileError> {
        self.0
    }
}

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_position_path_and_message() {
        let e = CompileError::new("rule[2].when", "bad").at(7, 23);
        assert_eq!(e.to_string(), "line 7, column 23 (rule[2].when): bad");
        let mut j = CompileError::new("rule[3].when", "bad");
        j.column = Some(12);
        assert_eq!(j.to_string(), "rule[3].when, column 12: bad");
        assert_eq!(CompileError::new("", "x").at(1, 2).to_string(), "line 1, column 2: x");
        assert_eq!(CompileError::new("rule[0]", "x").to_string(), "rule[0]: x");
    }
}
