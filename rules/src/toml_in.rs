//! Reading a TOML rule file into [`Draft`]s, with file positions from `toml`'s spanned
//! document API (`DeTable`), so every error can name its line and column.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{CompileError, CompileErrors};
use crate::source::{line_col, Draft, LineCol, Val, WhenLoc};

/// Parses `text` and reads each `[[rule]]` table. `rules_max` is checked before any rule is
/// read, so a huge file is refused cheaply.
pub(crate) fn read(text: &str, rules_max: usize) -> Result<Vec<Draft>, CompileErrors> {
    let doc = DeTable::parse(text).map_err(|e| CompileErrors::one(syntax_error(text, &e)))?;
    let mut drafts = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        let at = line_col(text, key.span().start);
        if key.get_ref() != "rule" {
            let msg = format!("unknown top-level key '{}'; rules go in [[rule]] tables", key.get_ref());
            errors.push(CompileError::new("", msg).at(at.0, at.1));
            continue;
        }
        match rule_tables(value, rules_max) {
            Ok(tables) => drafts = read_rules(text, tables),
            Err(msg) => errors.push(CompileError::new("rule", msg).at(at.0, at.1)),
        }
    }
    match CompileErrors::from_vec(errors) {
        Some(e) => Err(e),
        None => Ok(drafts),
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> CompileError {
    let msg = format!("TOML syntax: {}", e.message().trim_end());
    match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            CompileError::new("", msg).at(l, c)
        }
        None => CompileError::new("", msg),
    }
}

type Table<'i> = Spanned<DeValue<'i>>;

/// The `rule` value must be an array of tables, at most `rules_max` long.
fn rule_tables<'a, 'i>(value: &'a Table<'i>, rules_max: usize) -> Result<Vec<&'a Table<'i>>, String> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err("'rule' must be an array of tables: write each rule under [[rule]]".to_owned());
    };
    if items.len() > rules_max {
        return Err(format!("{} rules, more than the limit of {rules_max}", items.len()));
    }
    if items.iter().any(|t| !t.get_ref().is_table()) {
        return Err("'rule' must be an array of tables: write each rule under [[rule]]".to_owned());
    }
    Ok(items.iter().collect())
}

fn read_rules(text: &str, tables: Vec<&Table<'_>>) -> Vec<Draft> {
    tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| read_rule(text, i, t))
        .collect()
}

fn read_rule(text: &str, index: usize, table: &Table<'_>) -> Draft {
    let mut d = Draft::new(index, Some(rule_start(text, table.span())));
    let DeValue::Table(entries) = table.get_ref() else {
        return d;
    };
    for (key, value) in entries.iter() {
        let loc = line_col(text, value.span().start);
        let key_loc = line_col(text, key.span().start);
        let when_loc = when_loc(text, value);
        let val = to_val(text, value);
        let known = matches!(
            key.get_ref().as_ref(),
            "id" | "nodes" | "when" | "severity" | "cooldown"
        );
        d.apply(key.get_ref(), val, Some(if known { loc } else { key_loc }), when_loc);
    }
    d.check_required();
    d
}

/// Where a rule table starts: its `[[rule]]` header when the span reaches it, else the span
/// start.
fn rule_start(text: &str, span: Range<usize>) -> LineCol {
    let head = text.get(..span.start).and_then(|t| t.rfind("[[rule]]"));
    let between_is_blank = head
        .and_then(|h| text.get(h + "[[rule]]".len()..span.start))
        .is_some_and(|s| s.trim().is_empty());
    match head {
        Some(h) if between_is_blank => line_col(text, h),
        _ => line_col(text, span.start),
    }
}

fn to_val<'a>(text: &str, v: &'a Spanned<DeValue<'_>>) -> Val<'a> {
    match v.get_ref() {
        DeValue::String(s) => Val::Str(s.as_ref()),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(s) => out.push((s.as_ref(), Some(line_col(text, item.span().start)))),
                    other => return Val::Other(type_name(other)),
                }
            }
            Val::StrArray(out)
        }
        other => Val::Other(type_name(other)),
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array with a non-string item",
        DeValue::Table(_) => "a table",
    }
}

/// Maps the `when` string back to the file: exact when the raw text between the quotes is
/// the parsed string (after TOML's trim of a newline right after `'''`/`"""`).
fn when_loc(text: &str, v: &Spanned<DeValue<'_>>) -> WhenLoc {
    let span = v.span();
    let start = line_col(text, span.start);
    let exact = match (v.get_ref(), text.get(span.clone())) {
        (DeValue::String(parsed), Some(raw)) => exact_offset(raw, parsed).map(|o| span.start + o),
        _ => None,
    };
    WhenLoc::Toml { exact, start }
}

/// Offset inside `raw` (a quoted TOML string) where `parsed` starts verbatim, if it does.
fn exact_offset(raw: &str, parsed: &str) -> Option<usize> {
    let delim = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        1
    };
    let inner = raw.get(delim..raw.len().checked_sub(delim)?)?;
    let skip = if delim == 3 {
        if inner.starts_with("\r\n") {
            2
        } else {
            usize::from(inner.starts_with('\n'))
        }
    } else {
        0
    };
    (inner.get(skip..)? == parsed).then_some(delim + skip)
}

#[cfg(test)]
mod tests {
    use super::exact_offset;

    #[test]
    fn exact_offsets() {
        assert_eq!(exact_offset("\"price > 1\"", "price > 1"), Some(1));
        assert_eq!(exact_offset("'price > 1'", "price > 1"), Some(1));
        assert_eq!(exact_offset("'''\nprice > 1'''", "price > 1"), Some(4));
        assert_eq!(exact_offset("\"a \\\"b\\\"\"", "a \"b\""), None);
    }
}
