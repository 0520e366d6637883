//! Reading a JSON rule set (`{"rule": [{...}, ...]}`, the HTTP API's form) into [`Draft`]s.
//!
//! `serde_json` gives line/column for syntax errors only; past that, errors name their path
//! (`rule[3].when`) and, inside a condition, the column within the string.

use serde_json::Value;

use crate::error::{CompileError, CompileErrors};
use crate::source::{Draft, Val, WhenLoc};

/// Parses `text` and reads each rule object.
pub(crate) fn read(text: &str, rules_max: usize) -> Result<Vec<Draft>, CompileErrors> {
    let doc: Value = serde_json::from_str(text).map_err(|e| CompileErrors::one(syntax_error(&e)))?;
    let Value::Object(root) = doc else {
        return Err(one("", "expected an object like {\"rule\": [...]}"));
    };
    let mut errors = Vec::new();
    let mut drafts = Vec::new();
    for (key, value) in &root {
        if key != "rule" {
            errors.push(CompileError::new(
                key.as_str(),
                format!("unknown top-level key '{key}'; the only key is 'rule'"),
            ));
            continue;
        }
        match rule_objects(value, rules_max) {
            Ok(items) => drafts = items.iter().enumerate().map(|(i, o)| read_rule(i, o)).collect(),
            Err(msg) => errors.push(CompileError::new("rule", msg)),
        }
    }
    match CompileErrors::from_vec(errors) {
        Some(e) => Err(e),
        None => Ok(drafts),
    }
}

fn one(path: &str, msg: &str) -> CompileErrors {
    CompileErrors::one(CompileError::new(path, msg))
}

/// serde_json's Display appends " at line L column C"; the position goes in the fields.
fn syntax_error(e: &serde_json::Error) -> CompileError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    let line = u32::try_from(e.line()).unwrap_or(u32::MAX);
    let column = u32::try_from(e.column()).unwrap_or(u32::MAX).max(1);
    CompileError::new("", format!("JSON syntax: {msg}")).at(line, column)
}

fn rule_objects(value: &Value, rules_max: usize) -> Result<&[Value], String> {
    let Value::Array(items) = value else {
        return Err("'rule' must be an array of rule objects".to_owned());
    };
    if items.len() > rules_max {
        return Err(format!("{} rules, more than the limit of {rules_max}", items.len()));
    }
    if items.iter().any(|v| !v.is_object()) {
        return Err("'rule' must be an array of rule objects".to_owned());
    }
    Ok(items)
}

fn read_rule(index: usize, value: &Value) -> Draft {
    let mut d = Draft::new(index, None);
    let Value::Object(entries) = value else {
        return d;
    };
    for (key, v) in entries {
        d.apply(key, to_val(v), None, WhenLoc::Json);
    }
    d.check_required();
    d
}

fn to_val(v: &Value) -> Val<'_> {
    match v {
        Value::String(s) => Val::Str(s),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push((s.as_str(), None)),
                    _ => return Val::Other("an array with a non-string item"),
                }
            }
            Val::StrArray(out)
        }
        Value::Null => Val::Other("null"),
        Value::Bool(_) => Val::Other("a boolean"),
        Value::Number(_) => Val::Other("a number"),
        Value::Object(_) => Val::Other("an object"),
    }
}
