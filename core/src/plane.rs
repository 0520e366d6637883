//! The rule plane: the one place a rule set is compiled, installed on every reflex shard
//! and remembered as the set in force, whether it came from the rule file (the cold
//! shard's watcher, SIGHUP) or from `PUT /api/v1/rules` (the HTTP thread).
//!
//! Both callers are cold threads; a mutex serialises them so that two replacements cannot
//! interleave their pushes to the shards (every shard sees the same sequence of sets) and
//! each compile numbers versions against the set really in force.
//!
//! Every set is written to the [`RuleBook`] (durably, with a persistent data directory)
//! before any shard takes it, so a decision's generation always resolves to its text, and
//! [`initial`] brings the last installed set back at start.

use std::sync::{Arc, Mutex, MutexGuard};

use rim_rules::{Limits, RuleSet};
use serde::Serialize;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::reflex::Compiled;
use crate::rulebook::{sha256_hex, RuleBook, RuleRecord, RuleSummary};

/// The rules compiled in when no file is configured.
pub const DEFAULT_RULES: &str = include_str!("../../config/default-rules.toml");

/// Rule-compile limits from the configuration.
pub fn limits(config: &Config) -> Limits {
    Limits {
        rules_max: config.reflex.rules_max,
        window_min_ms: config.reflex.window_step_ms,
        window_max_ms: config.window_max_ms(),
        stale_rules_max: 64,
    }
}

/// The format of a rule file, by its name: `json` for `*.json`, else `toml`.
pub fn rules_format(origin: &str) -> &'static str {
    if origin.ends_with(".json") {
        "json"
    } else {
        "toml"
    }
}

/// Compiles rule text from `origin` (its format by [`rules_format`]), rendering errors one
/// per line.
pub fn compile(text: &str, origin: &str, config: &Config, previous: Option<&RuleSet>) -> Result<RuleSet, String> {
    compile_as(text, rules_format(origin), config, previous).map_err(|errs| errs.to_string())
}

/// Compiles rule text in `format` (`json`, else TOML).
pub fn compile_as(
    text: &str,
    format: &str,
    config: &Config,
    previous: Option<&RuleSet>,
) -> Result<RuleSet, rim_rules::CompileErrors> {
    match format {
        "json" => rim_rules::compile_json(text, &limits(config), previous),
        _ => rim_rules::compile_toml(text, &limits(config), previous),
    }
}

/// The origin of sets put through the HTTP API.
pub const API_ORIGIN: &str = "api";

/// Where a rule set came from, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesSource {
    /// A file path, `(embedded default rules)` or `api`.
    pub origin: String,
    /// `toml` or `json`.
    pub format: &'static str,
    /// The text as compiled.
    pub text: String,
}

/// Why a rule set was not installed.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// It does not compile: one message per error, each naming its line and column.
    #[error("the rule set does not compile:\n{}", .0.join("\n"))]
    Compile(Vec<String>),
    /// A shard has not yet taken the previous sets (replacements faster than a few per
    /// millisecond); nothing was installed.
    #[error("a reflex shard has not taken the previous rule sets yet; try again")]
    Busy,
    /// The rule book could not record the set durably; nothing was installed.
    #[error("the rule set could not be recorded, so it was not installed: {0}")]
    Store(String),
}

/// What a set would change against the one in force (a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesDiff {
    /// The generation it would get.
    pub generation: u64,
    /// Rules in it.
    pub rules: usize,
    /// Ids of rules it adds.
    pub added: Vec<String>,
    /// Ids of rules it removes.
    pub removed: Vec<String>,
    /// Rules whose definition changes (their version would rise).
    pub changed: Vec<RuleChange>,
    /// Rules that stay as they are.
    pub unchanged: usize,
}

/// One rule whose definition a set changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleChange {
    /// Its id.
    pub id: String,
    /// Its version now.
    pub from_version: u32,
    /// Its version in the new set.
    pub to_version: u32,
}

/// `new` (compiled against `old`) compared with `old`, rule by rule.
pub fn diff(old: &RuleSet, new: &RuleSet) -> RulesDiff {
    let mut d = RulesDiff {
        generation: new.generation(),
        rules: new.len(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        unchanged: 0,
    };
    for r in new.rules() {
        match old.find(r.id()).map(|i| old.rule(i)) {
            None => d.added.push(r.id().to_owned()),
            Some(o) if o.version() == r.version() => d.unchanged += 1,
            Some(o) => d.changed.push(RuleChange {
                id: r.id().to_owned(),
                from_version: o.version(),
                to_version: r.version(),
            }),
        }
    }
    d.removed = old
        .rules()
        .filter(|r| new.find(r.id()).is_none())
        .map(|r| r.id().to_owned())
        .collect();
    d
}

/// The set to start with, where it came from, and the rule file's hash.
pub struct Initial {
    /// The set, compiled.
    pub compiled: Arc<Compiled>,
    /// Its source.
    pub source: RulesSource,
    /// SHA-256 of the rule file's text as read at start.
    pub file_sha256: String,
}

/// Why no set could be chosen at start.
#[derive(Debug, thiserror::Error)]
pub enum InitialError {
    /// The rule file does not compile (its errors, one per line).
    #[error("the rule file does not compile:\n{0}")]
    Compile(String),
    /// The set could not be recorded.
    #[error("{0}")]
    Book(#[from] crate::rulebook::RuleBookError),
}

/// Chooses the set to start with: the rule book's last set, unless the rule file (or the
/// embedded defaults) changed since that set was installed, in which case the file wins
/// as the next generation (and is recorded). The log says which and why.
pub fn initial(
    config: &Config,
    book: &mut RuleBook,
    file: RulesSource,
    clock: &Clock,
) -> Result<Initial, InitialError> {
    let file_sha256 = sha256_hex(&file.text);
    let restored = book.latest().and_then(|r| restore(config, &r).map(|set| (r, set)));
    if let Some((record, set)) = &restored {
        if record.file_sha256 == file_sha256 {
            info!(
                generation = record.generation,
                origin = %record.origin,
                "rules restored from the rule book: the rule file is unchanged since this set was installed"
            );
            let source = RulesSource {
                origin: record.origin.clone(),
                format: if record.format == "json" { "json" } else { "toml" },
                text: record.text.clone(),
            };
            return Ok(Initial {
                compiled: Compiled::new(set.clone()),
                source,
                file_sha256,
            });
        }
        info!(
            generation = record.generation,
            file = %file.origin,
            "the rule file changed since the rule book's last set was installed; the file wins"
        );
    }
    let previous = restored.as_ref().map(|(_, s)| s);
    let mut set =
        compile_as(&file.text, file.format, config, previous).map_err(|e| InitialError::Compile(e.to_string()))?;
    if previous.is_none() {
        // A book whose last set no longer compiles (limits lowered) still numbers on.
        if let Some(last) = book.history().first() {
            set = set.with_identity(last.generation + 1, |_| None);
        }
    }
    book.record(record_of(&set, &file, &file_sha256, clock.unix_ms()))?;
    info!(generation = set.generation(), origin = %file.origin, "rules loaded from the rule file");
    Ok(Initial {
        compiled: Compiled::new(set),
        source: file,
        file_sha256,
    })
}

/// A stored set compiled again, under its old generation and versions (None, logged, if
/// it no longer compiles).
pub fn restore(config: &Config, r: &RuleRecord) -> Option<RuleSet> {
    let format = if r.format == "json" { "json" } else { "toml" };
    match compile_as(&r.text, format, config, None) {
        Ok(set) => Some(set.with_identity(r.generation, |id| {
            r.versions.iter().find(|(i, _)| i == id).map(|(_, v)| *v)
        })),
        Err(e) => {
            warn!(generation = r.generation, errors = %e, "a stored rule set no longer compiles");
            None
        }
    }
}

fn record_of(set: &RuleSet, source: &RulesSource, file_sha256: &str, installed_ms: u64) -> RuleRecord {
    RuleRecord {
        generation: set.generation(),
        format: source.format.to_owned(),
        origin: source.origin.clone(),
        installed_ms,
        sha256: sha256_hex(&source.text),
        rules: set.len(),
        versions: set.rules().map(|r| (r.id().to_owned(), r.version())).collect(),
        file_sha256: file_sha256.to_owned(),
        text: source.text.clone(),
    }
}

struct Inner {
    to_shards: Vec<rtrb::Producer<Arc<Compiled>>>,
    current: Arc<Compiled>,
    source: RulesSource,
    book: RuleBook,
    /// SHA-256 of the rule file's text as last read (carried into every record).
    file_sha256: String,
}

/// The rule set in force and the rings that carry new ones to the shards.
pub struct RulePlane {
    config: Config,
    inner: Mutex<Inner>,
    clock: Clock,
}

impl RulePlane {
    /// The plane, with `initial` (already installed on the shards at their start, and in
    /// `book`) in force.
    pub fn new(
        config: Config,
        initial: Initial,
        book: RuleBook,
        to_shards: Vec<rtrb::Producer<Arc<Compiled>>>,
        clock: Clock,
    ) -> Self {
        Self {
            config,
            clock,
            inner: Mutex::new(Inner {
                to_shards,
                current: initial.compiled,
                source: initial.source,
                book,
                file_sha256: initial.file_sha256,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (each field is replaced
        // whole), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The set in force.
    pub fn current(&self) -> Arc<Compiled> {
        self.lock().current.clone()
    }

    /// The set in force and where it came from.
    pub fn view(&self) -> (Arc<Compiled>, RulesSource) {
        let g = self.lock();
        (g.current.clone(), g.source.clone())
    }

    /// Compiles `source.text` against the set in force and, if it compiles, installs it on
    /// every shard. On failure the running set stays and the errors come back one per line
    /// (each naming its line and column).
    pub fn replace(&self, source: RulesSource) -> Result<Arc<Compiled>, ReplaceError> {
        let mut g = self.lock();
        // Checked before compiling and pushing to any shard, so that either every shard gets
        // the set or none does (this thread is the only sender, so room only grows).
        if g.to_shards.iter().any(|tx| tx.slots() == 0) {
            return Err(ReplaceError::Busy);
        }
        let set = self.compile(&source, &g.current.set)?;
        // A set from the rule file moves the file's hash on; an API set carries it.
        let file_sha256 = if source.origin == API_ORIGIN {
            g.file_sha256.clone()
        } else {
            sha256_hex(&source.text)
        };
        g.book
            .record(record_of(&set, &source, &file_sha256, self.clock.unix_ms()))
            .map_err(|e| ReplaceError::Store(e.to_string()))?;
        g.file_sha256 = file_sha256;
        let compiled = Compiled::new(set);
        for tx in &mut g.to_shards {
            if tx.push(compiled.clone()).is_err() {
                warn!("rule ring full after its room was checked");
            }
        }
        info!(origin = %source.origin, rules = compiled.set.len(), generation = compiled.set.generation(), "rules replaced");
        g.current = compiled.clone();
        g.source = source;
        Ok(compiled)
    }

    fn compile(&self, source: &RulesSource, current: &RuleSet) -> Result<RuleSet, ReplaceError> {
        compile_as(&source.text, source.format, &self.config, Some(current))
            .map_err(|errs| ReplaceError::Compile(errs.to_string().lines().map(str::to_owned).collect()))
    }

    /// Compiles `source` against the set in force and says what installing it would
    /// change, installing nothing.
    pub fn dry_run(&self, source: &RulesSource) -> Result<RulesDiff, ReplaceError> {
        let current = self.current();
        let set = self.compile(source, &current.set)?;
        Ok(diff(&current.set, &set))
    }

    /// The installed sets, newest first.
    pub fn history(&self) -> Vec<RuleSummary> {
        self.lock().book.history()
    }

    /// The installed set of `generation`, if the book keeps it.
    pub fn record(&self, generation: u64) -> Option<RuleRecord> {
        self.lock().book.get(generation)
    }

    /// Whether the book survives a restart (a persistent data directory).
    pub fn durable(&self) -> bool {
        self.lock().book.is_durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_file_compiles_in_the_format_its_name_says() {
        let config = Config::default();
        let json = r#"{"rule":[{"id":"hot","nodes":"rim:sensor:*","when":"metric.temp > 90","severity":"high"}]}"#;
        let set = compile(json, "/etc/rimd/rules.json", &config, None).expect("JSON by extension");
        assert_eq!(set.len(), 1);
        assert!(
            compile(json, "/etc/rimd/rules.toml", &config, None).is_err(),
            "JSON is not TOML"
        );
        let toml = "[[rule]]\nid = \"hot\"\nwhen = \"metric.temp > 90\"\nseverity = \"high\"\n";
        assert_eq!(
            compile(toml, "(embedded default rules)", &config, None).map(|s| s.len()),
            Ok(1)
        );
    }

    const GOOD: &str =
        "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 90\"\nseverity = \"high\"\n";

    fn plane(ring: usize) -> (RulePlane, rtrb::Consumer<Arc<Compiled>>) {
        plane_at(ring, &crate::clock::ManualClock::at(T0_MS))
    }

    const T0_MS: u64 = 1_700_000_000_000;

    fn plane_at(ring: usize, clock: &crate::clock::ManualClock) -> (RulePlane, rtrb::Consumer<Arc<Compiled>>) {
        let config = Config::default();
        let initial = Initial {
            compiled: Compiled::new(rim_rules::RuleSet::empty()),
            source: RulesSource {
                origin: "test".into(),
                format: "toml",
                text: String::new(),
            },
            file_sha256: String::new(),
        };
        let (tx, rx) = rtrb::RingBuffer::new(ring);
        (
            RulePlane::new(config, initial, RuleBook::in_memory(), vec![tx], clock.clock()),
            rx,
        )
    }

    #[test]
    fn a_good_set_reaches_the_shards_and_a_bad_one_changes_nothing() {
        let (p, mut rx) = plane(4);
        let before = p.current().set.generation();
        let bad = p.replace(RulesSource {
            origin: "api".into(),
            format: "toml",
            text: "[[rule]]\nid = \"x\"\nwhen = \"metric.temp >\"\n".into(),
        });
        match bad {
            Err(ReplaceError::Compile(errors)) => {
                assert!(!errors.is_empty());
                assert!(errors.iter().any(|e| e.contains("line")), "{errors:?}");
            }
            Err(e) => panic!("expected compile errors, got {e}"),
            Ok(_) => panic!("a rule with a broken condition compiled"),
        }
        assert!(rx.pop().is_err(), "nothing sent for a refused set");
        assert_eq!(p.current().set.generation(), before);

        let good = p
            .replace(RulesSource {
                origin: "api".into(),
                format: "toml",
                text: GOOD.into(),
            })
            .expect("compiles");
        assert_eq!(good.set.generation(), before + 1);
        assert_eq!(rx.pop().expect("sent").set.generation(), before + 1);
        let (cur, src) = p.view();
        assert_eq!(cur.set.len(), 1);
        assert_eq!(src.origin, "api");
        assert_eq!(src.text, GOOD);
    }

    #[test]
    fn every_installed_set_is_in_the_history_and_a_dry_run_installs_nothing() {
        let clock = crate::clock::ManualClock::at(T0_MS);
        let (p, mut rx) = plane_at(8, &clock);
        let api = |text: &str| RulesSource {
            origin: API_ORIGIN.into(),
            format: "toml",
            text: text.into(),
        };
        p.replace(api(GOOD)).expect("compiles");
        let two = "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 95\"\nseverity = \"high\"\n\n[[rule]]\nid = \"cold\"\nwhen = \"metric.temp < 0\"\nseverity = \"low\"\n";
        let d = p.dry_run(&api(two)).expect("compiles");
        assert_eq!(d.generation, 2);
        assert_eq!(d.added, vec!["cold".to_owned()]);
        assert!(d.removed.is_empty());
        assert_eq!(d.changed.len(), 1);
        assert_eq!((d.changed[0].from_version, d.changed[0].to_version), (1, 2));
        assert_eq!(p.current().set.generation(), 1, "a dry run installs nothing");
        assert_eq!(p.history().len(), 1);
        assert!(matches!(
            p.dry_run(&api("[[rule]]\nid = 1\n")),
            Err(ReplaceError::Compile(_))
        ));
        while rx.pop().is_ok() {}
        clock.advance(std::time::Duration::from_secs(90));
        p.replace(api(two)).expect("compiles");
        let h: Vec<(u64, u64)> = p.history().iter().map(|s| (s.generation, s.installed_ms)).collect();
        assert_eq!(
            h,
            vec![(2, T0_MS + 90_000), (1, T0_MS)],
            "installed at the plane's clock"
        );
        let r = p.record(2).expect("kept");
        assert_eq!(r.text, two);
        assert_eq!(r.versions, vec![("hot".to_owned(), 2), ("cold".to_owned(), 1)]);
        let restored = restore(&Config::default(), &r).expect("restores");
        assert_eq!(restored.generation(), 2);
        assert_eq!(restored.rule(0).version(), 2);
    }

    #[test]
    fn a_full_shard_ring_refuses_the_set_for_every_shard() {
        let (p, _rx) = plane(1);
        let src = || RulesSource {
            origin: "api".into(),
            format: "toml",
            text: GOOD.into(),
        };
        let first = p.replace(src()).expect("first fits").set.generation();
        assert!(matches!(p.replace(src()), Err(ReplaceError::Busy)));
        assert_eq!(p.current().set.generation(), first, "the refused set is not in force");
    }
}
