//! The rule plane: the one place a rule set is compiled, installed on every reflex shard
//! and remembered as the set in force, whether it came from the rule file (the cold
//! shard's watcher, SIGHUP) or from `PUT /api/v1/rules` (the HTTP thread).
//!
//! Both callers are cold threads; a mutex serialises them so that two replacements cannot
//! interleave their pushes to the shards (every shard sees the same sequence of sets) and
//! each compile numbers versions against the set really in force.

use std::sync::{Arc, Mutex, MutexGuard};

use rim_rules::RuleSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::reflex::Compiled;

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
}

struct Inner {
    to_shards: Vec<rtrb::Producer<Arc<Compiled>>>,
    current: Arc<Compiled>,
    source: RulesSource,
}

/// The rule set in force and the rings that carry new ones to the shards.
pub struct RulePlane {
    config: Config,
    inner: Mutex<Inner>,
}

impl RulePlane {
    /// The plane, with `initial` (already installed on the shards at their start) in force.
    pub fn new(
        config: Config,
        initial: Arc<Compiled>,
        source: RulesSource,
        to_shards: Vec<rtrb::Producer<Arc<Compiled>>>,
    ) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                to_shards,
                current: initial,
                source,
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
        let compiled = crate::daemon::compile_as(&source.text, source.format, &self.config, Some(&g.current.set));
        let set: RuleSet =
            compiled.map_err(|errs| ReplaceError::Compile(errs.to_string().lines().map(str::to_owned).collect()))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "[[rule]]\nid = \"hot\"\nnodes = \"rim:sensor:*\"\nwhen = \"metric.temp > 90\"\nseverity = \"high\"\n";

    fn plane(ring: usize) -> (RulePlane, rtrb::Consumer<Arc<Compiled>>) {
        let config = Config::default();
        let initial = Compiled::new(rim_rules::RuleSet::empty());
        let (tx, rx) = rtrb::RingBuffer::new(ring);
        let source = RulesSource {
            origin: "test".into(),
            format: "toml",
            text: String::new(),
        };
        (RulePlane::new(config, initial, source, vec![tx]), rx)
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
