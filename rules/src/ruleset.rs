//! The compiled [`RuleSet`] and its [`Rule`]s: assembling drafts into rules (conditions,
//! duplicate ids, stale ordinals, versions against the previous set) and the hot-path entry
//! points `RuleSet::eval` and `Rule::matches`.

use std::collections::{HashMap, HashSet};

use crate::error::{CompileError, CompileErrors};
use crate::glob::Glob;
use crate::model::{Evidence, Inputs, Limits, Series, Severity};
use crate::parse::parse;
use crate::program::{lower, Program};
use crate::source::{when_error, Draft, LineCol, FILE_BYTES_MAX, WHEN_BYTES_MAX};

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    id: String,
    version: u32,
    severity: Severity,
    cooldown_ms: u64,
    node_patterns: Vec<String>,
    globs: Vec<Glob>,
    when: String,
    program: Program,
    stale_ordinal: Option<u8>,
}

impl Rule {
    /// The rule's id, unique in its set.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// 1 when new; bumped each time a recompile changes its definition.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Severity of the decision it raises.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// Minimum time between two firings for one node, in milliseconds.
    pub fn cooldown_ms(&self) -> u64 {
        self.cooldown_ms
    }

    /// Does the node glob (any of them) match `node_id`? No allocation.
    #[inline]
    pub fn matches(&self, node_id: &str) -> bool {
        self.globs.iter().any(|g| g.matches(node_id))
    }

    /// The node globs as written.
    pub fn nodes(&self) -> &[String] {
        &self.node_patterns
    }

    /// Whether the condition contains `stale()`: such rules are also evaluated by the
    /// daemon's staleness sweep.
    pub fn uses_stale(&self) -> bool {
        self.program.uses_stale
    }

    /// Dense ordinal (0, 1, …) among the set's stale rules, in file order.
    pub fn stale_ordinal(&self) -> Option<u8> {
        self.stale_ordinal
    }

    /// Canonical text of leaf `i`, e.g. `metric.temp`, `change(metric.temp, 5s)`,
    /// `status == "DEGRADED"`; empty for an index the rule does not have.
    pub fn label(&self, i: u16) -> &str {
        self.program.labels.get(usize::from(i)).map_or("", String::as_str)
    }

    /// How many leaf labels the rule has (at most [`crate::EVIDENCE_MAX`]).
    pub fn labels_len(&self) -> usize {
        self.program.labels.len()
    }

    /// Every series a `change`/`pct_change`/`zscore`/`ewma` of this rule reads, once each.
    pub fn series_used(&self) -> impl Iterator<Item = Series> + '_ {
        self.program.series.iter().copied()
    }

    /// The condition as written in the file.
    pub fn when(&self) -> &str {
        &self.when
    }

    /// The condition in canonical form (what versioning compares).
    pub fn canonical_when(&self) -> &str {
        &self.program.canonical
    }

    /// Evaluates the condition into `ev` (cleared first). True only if the condition is true.
    #[inline]
    pub fn eval(&self, inputs: &impl Inputs, ev: &mut Evidence) -> bool {
        ev.clear();
        self.program.eval(inputs, ev) == Some(true)
    }

    /// What versioning compares: a reformatted `when` is the same definition.
    fn same_definition(&self, other: &Rule) -> bool {
        self.node_patterns == other.node_patterns
            && self.program.canonical == other.program.canonical
            && self.severity == other.severity
            && self.cooldown_ms == other.cooldown_ms
    }
}

/// A compiled rule file.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    generation: u64,
    source: String,
}

impl RuleSet {
    /// No rules, generation 0.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `previous.generation() + 1`, or 1 when compiled without a previous set.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule `i`, in file order.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i]
    }

    /// The rules, in file order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The index of the rule with this id.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }

    /// The file text this set was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The same set under the generation and rule versions it had when it was first
    /// installed: a set recompiled from its stored text after a restart must number its
    /// decisions as before. `version_of(id)` gives a rule's stored version; rules it does
    /// not know keep theirs.
    pub fn with_identity(mut self, generation: u64, version_of: impl Fn(&str) -> Option<u32>) -> Self {
        self.generation = generation;
        for r in &mut self.rules {
            if let Some(v) = version_of(&r.id) {
                r.version = v;
            }
        }
        self
    }

    /// Evaluates rule `i`, recording each leaf read into `ev` (cleared first): label index
    /// and value, NaN when unknown. True only if the condition is true; false for an index
    /// out of range. Never allocates.
    #[inline]
    pub fn eval(&self, i: usize, inputs: &impl Inputs, ev: &mut Evidence) -> bool {
        match self.rules.get(i) {
            Some(r) => r.eval(inputs, ev),
            None => {
                ev.clear();
                false
            }
        }
    }
}

/// Compiles a TOML rule file (`[[rule]]` tables). Errors carry file lines and columns.
pub fn compile_toml(text: &str, limits: &Limits, previous: Option<&RuleSet>) -> Result<RuleSet, CompileErrors> {
    check_size(text)?;
    let drafts = crate::toml_in::read(text, limits.rules_max)?;
    build(text, drafts, limits, previous)
}

/// Compiles a JSON rule set (`{"rule": [{...}]}`). Syntax errors carry file lines and
/// columns; condition errors carry the path and the column inside the `when` string.
pub fn compile_json(text: &str, limits: &Limits, previous: Option<&RuleSet>) -> Result<RuleSet, CompileErrors> {
    check_size(text)?;
    let drafts = crate::json_in::read(text, limits.rules_max)?;
    build(text, drafts, limits, previous)
}

fn check_size(text: &str) -> Result<(), CompileErrors> {
    if text.len() > FILE_BYTES_MAX {
        let msg = format!(
            "the rule file is {} bytes, more than the limit of {FILE_BYTES_MAX}",
            text.len()
        );
        return Err(CompileErrors::one(CompileError::new("", msg)));
    }
    Ok(())
}

/// A rule's path (`rule[i]`) and file position, for errors found after assembly.
type Place = (String, Option<LineCol>);

/// Turns drafts into rules, collecting every error of every rule.
fn build(
    text: &str,
    drafts: Vec<Draft>,
    limits: &Limits,
    previous: Option<&RuleSet>,
) -> Result<RuleSet, CompileErrors> {
    let mut errors = Vec::new();
    let mut rules = Vec::with_capacity(drafts.len());
    let mut places: Vec<Place> = Vec::with_capacity(drafts.len());
    let mut seen = HashSet::new();
    for mut d in drafts {
        let program = d.when.as_ref().and_then(|(when, loc)| {
            compile_when(when, limits)
                .map_err(|e| d.errors.push(when_error(text, &d.path, when, loc, e)))
                .ok()
        });
        check_duplicate(&mut d, &mut seen);
        match (assemble(&mut d, program), d.errors.is_empty()) {
            (Some(rule), true) => {
                rules.push(rule);
                places.push((d.path.clone(), d.loc));
            }
            _ => {
                // File order within the rule (TOML tables iterate keys alphabetically).
                d.errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
                errors.append(&mut d.errors);
            }
        }
    }
    assign_stale_ordinals(&mut rules, &places, limits, &mut errors);
    if let Some(e) = CompileErrors::from_vec(errors) {
        return Err(e);
    }
    assign_versions(&mut rules, previous);
    Ok(RuleSet {
        rules,
        generation: previous.map_or(1, |p| p.generation.saturating_add(1)),
        source: text.to_owned(),
    })
}

fn compile_when(when: &str, limits: &Limits) -> Result<Program, crate::lex::ExprError> {
    if when.len() > WHEN_BYTES_MAX {
        let msg = format!(
            "the condition is {} bytes, more than the limit of {WHEN_BYTES_MAX}",
            when.len()
        );
        return Err(crate::lex::ExprError::new(0, msg));
    }
    lower(&parse(when, limits)?)
}

fn check_duplicate(d: &mut Draft, seen: &mut HashSet<String>) {
    let Some((id, loc)) = d.id.clone() else {
        return;
    };
    if !seen.insert(id.clone()) {
        d.error("id", loc, format!("id '{id}' is already used by an earlier rule"));
    }
}

/// Moves a complete draft's parts into a rule (version and ordinal come later).
fn assemble(d: &mut Draft, program: Option<Program>) -> Option<Rule> {
    let (id, _) = d.id.take()?;
    let (when, _) = d.when.take()?;
    let (node_patterns, globs) = d
        .nodes
        .take()
        .unwrap_or_else(|| (vec!["*".to_owned()], vec![Glob::Any]));
    Some(Rule {
        id,
        version: 1,
        severity: d.severity?,
        cooldown_ms: d.cooldown_ms,
        node_patterns,
        globs,
        when,
        program: program?,
        stale_ordinal: None,
    })
}

/// Numbers the stale rules densely in file order; refuses more than the limit (or 256, the
/// range of a `u8`). `places` holds each rule's path and position, for the error.
fn assign_stale_ordinals(rules: &mut [Rule], places: &[Place], limits: &Limits, errors: &mut Vec<CompileError>) {
    let max = limits.stale_rules_max.min(256);
    let stale = rules.iter_mut().zip(places).filter(|(r, _)| r.uses_stale());
    for (i, (r, (path, loc))) in stale.enumerate() {
        match u8::try_from(i) {
            Ok(ord) if i < max => r.stale_ordinal = Some(ord),
            _ => {
                let msg = format!("more than {max} rules use stale(); this one is over the limit");
                let mut e = CompileError::new(format!("{path}.when"), msg);
                if let Some((l, c)) = loc {
                    e = e.at(*l, *c);
                }
                errors.push(e);
            }
        }
    }
}

/// Keeps the version of an unchanged rule, bumps a changed one, starts new ones at 1.
fn assign_versions(rules: &mut [Rule], previous: Option<&RuleSet>) {
    let Some(prev) = previous else {
        return;
    };
    let by_id: HashMap<&str, &Rule> = prev.rules.iter().map(|r| (r.id.as_str(), r)).collect();
    for r in rules.iter_mut() {
        r.version = match by_id.get(r.id.as_str()) {
            Some(old) if old.same_definition(r) => old.version,
            Some(old) => old.version.saturating_add(1),
            None => 1,
        };
    }
}
