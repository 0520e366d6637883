//! `POST /rules/backtests` and `GET /rules/backtests/{id}`: a backtest
//! ([`crate::backtest`]) as an asynchronous job.
//!
//! Bounded: at most `api.backtests_max` run at once (more: 429), a range of at most
//! `api.backtest_range_ms_max`, at most `api.backtest_events_max` journal events (the job
//! fails past it), and the newest `api.backtests_kept` jobs are kept for reading. Admin
//! scope for both routes. Each job runs on a thread of its own, on the cold core when
//! threads are pinned, at the lowest priority: the hot shards never share its core, and
//! the cold core's own duties come first. A stopping daemon cancels running jobs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Body, Code, Detail, Meta, Problem};
use super::routes::PREFIX;
use super::server::App;
use crate::backtest::{self, Report, Spec};
use crate::config::Config;

/// The name of a backtest's thread (a panic there fails the job, not the daemon).
pub const THREAD_NAME: &str = "rimd-backtest";

/// Examples of each kind a request may ask for.
const EXAMPLES_MAX: usize = 100;

/// What a job is doing.
#[derive(Debug, Clone)]
enum State {
    Running,
    Done(Box<Report>),
    Failed(String),
}

/// One backtest job.
#[derive(Debug)]
struct Job {
    id: u64,
    created_ms: u64,
    from_ms: i64,
    to_ms: i64,
    candidate: String,
    progress: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Job {
    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The jobs the API knows.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Drop for Jobs {
    fn drop(&mut self) {
        // The API is stopping: running jobs stop at their next check.
        for j in self.jobs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            j.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// The request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Request {
    from_ms: i64,
    to_ms: i64,
    /// The candidate's text (else `generation`, else the set in force).
    text: Option<String>,
    /// `toml` (default) or `json`.
    format: Option<String>,
    /// A stored generation as the candidate.
    generation: Option<u64>,
    /// Examples of each kind (default 5, at most 100).
    examples: Option<usize>,
}

/// A job as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
    id: String,
    state: &'static str,
    created_ms: u64,
    from_ms: i64,
    to_ms: i64,
    candidate: String,
    events_read: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Box<Report>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn view(j: &Job) -> JobView {
    let (state, result, error) = match j.state() {
        State::Running => ("running", None, None),
        State::Done(r) => ("done", Some(r), None),
        State::Failed(e) => ("failed", None, Some(e)),
    };
    JobView {
        id: j.id.to_string(),
        state,
        created_ms: j.created_ms,
        from_ms: j.from_ms,
        to_ms: j.to_ms,
        candidate: j.candidate.clone(),
        events_read: j.progress.load(Ordering::Relaxed),
        result,
        error,
    }
}

/// `POST /rules/backtests`: starts a job; 202 with its view and `Location`.
pub fn post(app: &App, meta: &Meta, body: &[u8]) -> Result<Response<Body>, Problem> {
    let config = app.ctx.config().clone();
    if !config.persist.enabled {
        return Err(Problem::new(
            Code::Unavailable,
            "backtests replay the journal; persistence is off",
        ));
    }
    let req: Request = serde_json::from_slice(body).map_err(|e| {
        Problem::new(Code::Validation, format!("invalid backtest request: {e}")).with(Detail::field(
            "body",
            "expected {\"fromMs\": ms, \"toMs\": ms, \"text\"?: rules, \"format\"?: \"toml\"|\"json\", \"generation\"?: n}",
        ))
    })?;
    check_range(&config, &req)?;
    if req.examples.is_some_and(|n| n > EXAMPLES_MAX) {
        return Err(Problem::invalid("examples", format!("at most {EXAMPLES_MAX}")));
    }
    let (candidate, label) = candidate(app, &config, &req)?;
    let jobs = app.ctx.backtests();
    let running = {
        let list = jobs.jobs.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().filter(|j| matches!(j.state(), State::Running)).count()
    };
    if running >= config.api.backtests_max {
        return Err(Problem::new(
            Code::RateLimited,
            format!("{running} backtest(s) running, the limit (api.backtests_max); try again when one is done"),
        ));
    }
    let mut spec = Spec::new(config.persist.journal_dir(), req.from_ms, req.to_ms, candidate);
    spec.examples_max = req.examples.unwrap_or(backtest::EXAMPLES_DEFAULT);
    spec.events_max = config.api.backtest_events_max;
    spec.clock = app.ctx.clock().clone();
    let job = Arc::new(Job {
        id: jobs.next.fetch_add(1, Ordering::Relaxed) + 1,
        created_ms: app.ctx.clock().unix_ms(),
        from_ms: req.from_ms,
        to_ms: req.to_ms,
        candidate: label,
        progress: spec.progress.clone(),
        cancel: spec.cancel.clone(),
        state: Mutex::new(State::Running),
    });
    start(job.clone(), config.clone(), spec)?;
    {
        let mut list = jobs.jobs.lock().unwrap_or_else(|p| p.into_inner());
        list.push_back(job.clone());
        while list.len() > config.api.backtests_kept {
            // The oldest finished job goes; running ones stay (there are fewer than the
            // number kept).
            match list.iter().position(|j| !matches!(j.state(), State::Running)) {
                Some(i) => {
                    list.remove(i);
                }
                None => break,
            }
        }
    }
    let mut resp = envelope::data(meta, StatusCode::ACCEPTED, &view(&job), None);
    if let Ok(v) = HeaderValue::from_str(&format!("{PREFIX}/rules/backtests/{}", job.id)) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// `GET /rules/backtests/{id}`.
pub fn get(app: &App, meta: &Meta, id: &str) -> Result<Response<Body>, Problem> {
    let not_found = || {
        Problem::new(
            Code::NotFound,
            format!("no backtest {id} (finished ones are kept a while)"),
        )
    };
    let n: u64 = id.parse().map_err(|_| not_found())?;
    let jobs = app.ctx.backtests();
    let list = jobs.jobs.lock().unwrap_or_else(|p| p.into_inner());
    let job = list.iter().find(|j| j.id == n).ok_or_else(not_found)?;
    Ok(envelope::data(meta, StatusCode::OK, &view(job), None))
}

fn check_range(config: &Config, req: &Request) -> Result<(), Problem> {
    if req.to_ms <= req.from_ms {
        return Err(Problem::invalid("toMs", "must be after fromMs"));
    }
    let width = (i128::from(req.to_ms) - i128::from(req.from_ms)) as u128;
    if width > u128::from(config.api.backtest_range_ms_max) {
        return Err(Problem::invalid(
            "toMs",
            format!(
                "the range is {width} ms, wider than api.backtest_range_ms_max ({})",
                config.api.backtest_range_ms_max
            ),
        ));
    }
    Ok(())
}

/// The candidate set and how the job names it.
fn candidate(app: &App, config: &Config, req: &Request) -> Result<(rim_rules::RuleSet, String), Problem> {
    let current = app.ctx.rule_set();
    let format = match req.format.as_deref() {
        None | Some("toml") => "toml",
        Some("json") => "json",
        Some(_) => return Err(Problem::invalid("format", "must be toml or json")),
    };
    match (&req.text, req.generation) {
        (Some(_), Some(_)) => Err(Problem::invalid("generation", "give text or generation, not both")),
        (Some(text), None) => {
            let set = crate::plane::compile_as(text, format, config, Some(&current)).map_err(|errs| {
                let mut p = Problem::new(Code::Validation, "the candidate rule set does not compile");
                p.details = errs
                    .errors()
                    .iter()
                    .map(|e| Detail::field("text", e.to_string()))
                    .collect();
                p
            })?;
            Ok((set, "text".into()))
        }
        (None, Some(g)) => {
            let record = app
                .ctx
                .rules_of(g)
                .ok_or_else(|| Problem::new(Code::NotFound, format!("no rule set of generation {g} is kept")))?;
            let set = crate::plane::restore(config, &record).ok_or_else(|| {
                Problem::new(
                    Code::Validation,
                    format!("generation {g} no longer compiles with this configuration"),
                )
            })?;
            Ok((set, format!("generation {g}")))
        }
        (None, None) => {
            let label = format!("generation {} (in force)", current.generation());
            Ok((current, label))
        }
    }
}

/// Runs the job on a thread of its own (cold core, lowest priority).
fn start(job: Arc<Job>, config: Config, spec: Spec) -> Result<(), Problem> {
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            crate::agent::pin(config.topology.cold_core, config.topology.pin);
            crate::sys::lower_thread_priority();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backtest::run(&config, &spec)));
            let state = match outcome {
                Ok(Ok(r)) => State::Done(Box::new(r)),
                Ok(Err(e)) => State::Failed(e.to_string()),
                Err(_) => State::Failed("the backtest failed unexpectedly (a bug; see the daemon's log)".into()),
            };
            tracing::info!(job = job.id, state = ?matches!(state, State::Done(_)), "backtest finished");
            *job.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        })
        .map(|_| ())
        .map_err(|e| Problem::new(Code::Internal, format!("cannot start the backtest thread: {e}")))
}
