//! The route table (everything under `/api/v1`) and the handlers of capsules, history,
//! rules, decisions, metrics and health. `POST /events`, the slice and the WebSocket have
//! modules of their own.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderValue, LOCATION};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use rim_capsule::{
    Capsule, CapsuleBody, CapsuleId, CapsuleRequest, HistoryQuery, ModelError, PutOutcome, Store, StoreError, Vantage,
};
use rim_ring::event::RimNodeId;
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};

use super::envelope::{self, Body, Code, Detail, Meta, Pagination, Problem};
use super::query::{decode_path, Paging, Query};
use super::server::{App, BodyKind};
use crate::persist::audit::{DecisionLog, LogError};
use crate::reflex::decision::{self, Decision, Verifier};

/// The API's prefix.
pub const PREFIX: &str = "/api/v1";
/// Capsules read for one list or history request at most (the store's own cap).
const LIST_ROWS_MAX: usize = rim_capsule::store::HISTORY_ROWS_MAX;
/// Decision records read per store call while verifying or scanning.
const DECISION_CHUNK: usize = 1_000;
/// How long `PUT /rules` waits for the rule plane to take a new set.
const RULES_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most whitespace `GET /ping?pad=` adds (1 MiB).
const PING_PAD_MAX: usize = 1 << 20;
/// Decision records a node-filtered list scans at most.
const DECISION_SCAN_MAX: usize = 100_000;

/// A resolved route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /ping`: the cheapest route (`?pad=N`: with N bytes of JSON whitespace, an
    /// answer as large as another route's at no cost of its own); `POST /ping`: reads a JSON body (as large as
    /// `POST /events` takes) and discards it, the HTTP transfer floor of a batch
    /// (benchmarks).
    Ping,
    /// `POST /events`.
    Events,
    /// `GET`, `POST /capsules`.
    Capsules,
    /// `GET`, `DELETE /capsules/{id}`.
    Capsule(String),
    /// `GET /history`.
    History,
    /// `GET /history/{scopeId}`.
    HistoryOf(String),
    /// `GET /temporal/slice/{nodeId}`.
    Slice(String),
    /// `GET`, `PUT /rules` (`?dryRun=true`: compile and compare only).
    Rules,
    /// `GET /rules/history`.
    RulesHistory,
    /// `GET /rules/{generation}`.
    RulesOf(String),
    /// `POST /rules/backtests` (admin).
    Backtests,
    /// `GET /rules/backtests/{id}` (admin).
    Backtest(String),
    /// `GET /decisions`.
    Decisions,
    /// `GET /decisions/verify`.
    DecisionsVerify,
    /// `GET /metrics`.
    Metrics,
    /// `GET /health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    /// `GET /ws/decisions`.
    Ws,
}

impl Route {
    fn allow(&self) -> &'static str {
        match self {
            Route::Events | Route::Backtests => "POST",
            Route::Ping | Route::Capsules => "GET, POST",
            Route::Capsule(_) => "GET, DELETE",
            Route::Rules => "GET, PUT",
            _ => "GET",
        }
    }

    fn allows(&self, m: &Method) -> bool {
        match self {
            Route::Events | Route::Backtests => m == Method::POST,
            Route::Ping | Route::Capsules => m == Method::GET || m == Method::POST,
            Route::Capsule(_) => m == Method::GET || m == Method::DELETE,
            Route::Rules => m == Method::GET || m == Method::PUT,
            _ => m == Method::GET,
        }
    }

    /// Probes answer without a token.
    pub fn needs_auth(&self) -> bool {
        !matches!(self, Route::Live | Route::Ready)
    }

    /// Routes that need the admin scope even to read (backtests replay the journal: a
    /// read that costs a core).
    pub fn admin_only(&self) -> bool {
        matches!(self, Route::Backtests | Route::Backtest(_))
    }

    /// Probes and scrapes are not rate limited.
    pub fn rate_limited(&self) -> bool {
        !matches!(self, Route::Live | Route::Ready | Route::Metrics)
    }

    /// The body this route and method take, if any.
    pub fn body_kind(&self, m: &Method) -> Option<BodyKind> {
        match (self, m) {
            (Route::Rules, &Method::PUT) => Some(BodyKind::JsonOrToml),
            (_, &Method::POST) | (_, &Method::PUT) => Some(BodyKind::Json),
            _ => None,
        }
    }
}

/// Finds the route of `path`: 404 when there is none, 405 (with `Allow`) when the route
/// does not take `method`.
pub fn resolve(method: &Method, path: &str) -> Result<Route, Problem> {
    let not_found = || Problem::new(Code::NotFound, format!("no route {path}"));
    let rest = path.strip_prefix(PREFIX).ok_or_else(not_found)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segs = rest.split('/').skip(1);
    let (a, b, c, d) = (segs.next(), segs.next(), segs.next(), segs.next());
    let owned = |s: &str| decode_path(s).map(|c| c.into_owned());
    let route = match (a, b, c, d) {
        (Some("ping"), None, ..) => Route::Ping,
        (Some("events"), None, ..) => Route::Events,
        (Some("capsules"), None, ..) => Route::Capsules,
        (Some("capsules"), Some(id), None, _) if !id.is_empty() => Route::Capsule(id.to_owned()),
        (Some("history"), None, ..) => Route::History,
        (Some("history"), Some(s), None, _) if !s.is_empty() => {
            Route::HistoryOf(owned(s).ok_or_else(|| Problem::invalid("scopeId", "malformed percent-encoding"))?)
        }
        (Some("temporal"), Some("slice"), Some(n), None) if !n.is_empty() => {
            Route::Slice(owned(n).ok_or_else(|| Problem::invalid("nodeId", "malformed percent-encoding"))?)
        }
        (Some("rules"), None, ..) => Route::Rules,
        (Some("rules"), Some("history"), None, _) => Route::RulesHistory,
        (Some("rules"), Some("backtests"), None, _) => Route::Backtests,
        (Some("rules"), Some("backtests"), Some(id), None) if !id.is_empty() => Route::Backtest(id.to_owned()),
        (Some("rules"), Some(g), None, _) if !g.is_empty() => Route::RulesOf(g.to_owned()),
        (Some("decisions"), None, ..) => Route::Decisions,
        (Some("decisions"), Some("verify"), None, _) => Route::DecisionsVerify,
        (Some("metrics"), None, ..) => Route::Metrics,
        (Some("health"), Some("live"), None, _) => Route::Live,
        (Some("health"), Some("ready"), None, _) => Route::Ready,
        (Some("ws"), Some("decisions"), None, _) => Route::Ws,
        _ => return Err(not_found()),
    };
    if !route.allows(method) {
        let mut p = Problem::new(
            Code::MethodNotAllowed,
            format!("{method} is not allowed on {path}; allowed: {}", route.allow()),
        );
        p.allow = Some(route.allow());
        return Err(p);
    }
    Ok(route)
}

/// Runs the handler of `route`.
pub async fn dispatch(
    app: &App,
    route: Route,
    parts: &Parts,
    body: Bytes,
    meta: &Meta,
) -> Result<Response<Body>, Problem> {
    let q = Query::parse(parts.uri.query())?;
    let m = &parts.method;
    match route {
        Route::Ping if m == Method::POST => Ok(envelope::data(
            meta,
            StatusCode::OK,
            &Discarded { bytes: body.len() },
            None,
        )),
        Route::Ping => {
            let pad = q.int("pad", 0usize, 0..=PING_PAD_MAX)?;
            let mut data = Vec::with_capacity(6 + pad);
            data.extend_from_slice(b"\"pong\"");
            data.resize(6 + pad, b' ');
            Ok(envelope::raw_data(meta, StatusCode::OK, &data, None))
        }
        Route::Events => super::events::post(app, meta, &q, &body).await,
        Route::Capsules if m == Method::POST => create_capsule(app, meta, &body).await,
        Route::Capsules => list_capsules(app, meta, &q, None),
        Route::Capsule(id) if m == Method::DELETE => delete_capsule(app, meta, &id).await,
        Route::Capsule(id) => get_capsule(app, meta, &id),
        Route::History => list_capsules(app, meta, &q, None),
        Route::HistoryOf(scope) => list_capsules(app, meta, &q, Some(&scope)),
        Route::Slice(node) => super::slice::get(app, meta, &q, &node).await,
        Route::Rules if m == Method::PUT => put_rules(app, meta, parts, &q, &body).await,
        Route::Rules => Ok(envelope::data(meta, StatusCode::OK, &app.ctx.rules(), None)),
        Route::RulesHistory => Ok(rules_history(app, meta)),
        Route::RulesOf(g) => rules_of(app, meta, &g),
        Route::Backtests => super::backtests::post(app, meta, &body),
        Route::Backtest(id) => super::backtests::get(app, meta, &id),
        Route::Decisions => list_decisions(app, meta, &q),
        Route::DecisionsVerify => verify_decisions(app, meta).await,
        Route::Metrics => Ok(envelope::text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(app),
        )),
        Route::Live => Ok(envelope::data(meta, StatusCode::OK, &Health { status: "UP" }, None)),
        Route::Ready => Ok(ready(app, meta)),
        Route::Ws => Err(Problem::new(
            Code::Internal,
            "the WebSocket route is served by the pipeline",
        )),
    }
}

/// What `POST /ping` answers: how much it read and threw away.
#[derive(Serialize)]
struct Discarded {
    bytes: usize,
}

/// The daemon's metrics and the HTTP server's own connection counters.
fn metrics_text(app: &App) -> String {
    let mut out = app.ctx.metrics_text();
    app.conns.render_prometheus(app.cfg.connections_max, &mut out);
    let r = app.resident.borrow();
    r.counters().render_prometheus(r.bytes(), &mut out);
    app.hub.render_prometheus(&mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Capsules and history

/// A capsule as the API shows it: its `id` first, then the key, the body under
/// `observed`, `predicted` or `payload`, and `createdMs`.
pub struct CapsuleView<'a>(pub &'a Capsule);

impl Serialize for CapsuleView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(Some(7))?;
        let mut hex = [0u8; 64];
        m.serialize_entry("id", hex_id(&c.id(), &mut hex))?;
        m.serialize_entry("scopeId", &c.key.scope_id)?;
        m.serialize_entry("timestamp", &c.key.timestamp)?;
        m.serialize_entry("resolution", &c.key.resolution)?;
        m.serialize_entry("vantageMode", c.key.vantage.as_str())?;
        match &c.body {
            CapsuleBody::Observed(o) => m.serialize_entry("observed", o)?,
            CapsuleBody::Predicted(p) => m.serialize_entry("predicted", p)?,
            CapsuleBody::Payload(text) => {
                let raw: &serde_json::value::RawValue = serde_json::from_str(text).map_err(S::Error::custom)?;
                m.serialize_entry("payload", raw)?
            }
        }
        m.serialize_entry("createdMs", &c.created_ms)?;
        m.end()
    }
}

/// Lower-case hex of an id without the formatting machinery (a slice of 60 capsules
/// formats 60 ids).
fn hex_id<'b>(id: &CapsuleId, out: &'b mut [u8; 64]) -> &'b str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in id.as_bytes().iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(out).unwrap_or("")
}

/// Capsules as a list view.
pub struct CapsuleList<'a>(pub &'a [Capsule]);

impl Serialize for CapsuleList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(CapsuleView))
    }
}

/// The store, or 503 when persistence is off.
pub fn store(app: &App) -> Result<&Arc<Store>, Problem> {
    app.ctx.store().ok_or_else(|| {
        Problem::new(
            Code::Unavailable,
            "the capsule store is not available (persistence is off)",
        )
    })
}

/// The decision log (through the store's index), or 503 when persistence is off.
fn log(app: &App) -> Result<DecisionLog, Problem> {
    let store = store(app)?.clone();
    Ok(DecisionLog::new(&app.ctx.config().persist.journal_dir(), store))
}

fn log_problem(e: LogError) -> Problem {
    match e {
        LogError::Store(e) => store_problem(e),
        other => Problem::internal("decision log failed", &other),
    }
}

/// Checks a RimNodeId, naming the parameter and the pattern.
pub fn check_node(field: &str, id: &str) -> Result<(), Problem> {
    RimNodeId::parse(id).map(|_| ()).map_err(|e| {
        Problem::invalid(
            field,
            format!("{e} (must match pattern {})", rim_ring::event::NODE_ID_PATTERN),
        )
    })
}

fn parse_id(id: &str) -> Result<CapsuleId, Problem> {
    CapsuleId::parse_hex(id).map_err(|e| Problem::invalid("id", format!("{e} (64 hex digits)")))
}

fn model_problem(e: &ModelError) -> Problem {
    let field = match e {
        ModelError::InvalidVantage { .. } | ModelError::BodyMismatch { .. } => "vantageMode",
        ModelError::PayloadTooLarge { .. } => "payload",
        ModelError::InvalidScope { .. } => "scopeId",
        ModelError::ZeroResolution => "resolution",
        _ => "capsule",
    };
    Problem::invalid(field, e.to_string())
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Conflict { id } => Problem::new(
            Code::Conflict,
            format!("capsule {id} already exists with different content"),
        )
        .with(Detail::field("id", id.to_string())),
        StoreError::PayloadTooLarge { len, max } => Problem::invalid(
            "payload",
            format!("payload of {len} bytes exceeds the maximum of {max} bytes"),
        ),
        StoreError::InvalidVantage { value } => Problem::invalid("vantageMode", format!("invalid vantage {value:?}")),
        StoreError::Invalid(m) => model_problem(&m),
        other => Problem::internal("capsule store failed", &other),
    }
}

async fn create_capsule(app: &App, meta: &Meta, body: &[u8]) -> Result<Response<Body>, Problem> {
    let store = store(app)?.clone();
    let req: CapsuleRequest = serde_json::from_slice(body).map_err(|e| {
        Problem::new(Code::Validation, format!("invalid capsule JSON: {e}")).with(Detail::field("body", e.to_string()))
    })?;
    check_node("scopeId", &req.scope_id)?;
    let capsule = req
        .into_capsule(app.ctx.clock().now_ms())
        .map_err(|e| model_problem(&e))?;
    let c = capsule.clone();
    let outcome = glommio::executor().spawn_blocking(move || store.put(&c)).await;
    app.ctx.note_store_write();
    let outcome = outcome.map_err(store_problem)?;
    let status = match outcome {
        PutOutcome::Inserted => StatusCode::CREATED,
        PutOutcome::Existing => StatusCode::OK,
    };
    let mut resp = envelope::data(meta, status, &CapsuleView(&capsule), None);
    let location = format!("{PREFIX}/capsules/{}", capsule.id());
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

fn get_capsule(app: &App, meta: &Meta, id: &str) -> Result<Response<Body>, Problem> {
    let id = parse_id(id)?;
    match store(app)?.get(&id).map_err(store_problem)? {
        Some(c) => Ok(envelope::data(meta, StatusCode::OK, &CapsuleView(&c), None)),
        None => Err(Problem::new(Code::NotFound, format!("no capsule {id}"))),
    }
}

#[derive(Serialize)]
struct Deleted {
    id: String,
    deleted: bool,
}

async fn delete_capsule(app: &App, meta: &Meta, id: &str) -> Result<Response<Body>, Problem> {
    let id = parse_id(id)?;
    let store = store(app)?.clone();
    let found = glommio::executor().spawn_blocking(move || store.delete(&id)).await;
    // The resident windows may hold the capsule: forget them all (deletes are rare).
    app.ctx.note_store_write();
    app.resident.borrow_mut().clear();
    let found = found.map_err(store_problem)?;
    if !found {
        return Err(Problem::new(Code::NotFound, format!("no capsule {id}")));
    }
    let d = Deleted {
        id: id.to_string(),
        deleted: true,
    };
    Ok(envelope::data(meta, StatusCode::OK, &d, None))
}

/// The history query of a list request: `scopeId` (or the path's), `from`/`to` (epoch
/// ms, window starts in `[from, to)`; empty when `from >= to`), `resolution` (s; see
/// [`resolutions`] when absent), and `vantageMode` (default OBSERVED).
fn history_query(app: &App, q: &Query<'_>, scope: Option<&str>) -> Result<HistoryQuery, Problem> {
    let scope_id = match scope.or_else(|| q.get("scopeId")) {
        Some(s) => s.to_owned(),
        None => return Err(Problem::invalid("scopeId", "is required")),
    };
    check_node("scopeId", &scope_id)?;
    let from_ms = q.int("from", i64::MIN, i64::MIN..=i64::MAX)?;
    let to_ms = q.int("to", i64::MAX, i64::MIN..=i64::MAX)?;
    // `from >= to` is an empty range, answered with an empty page.
    let resolution = q.int("resolution", app.cfg.slice_resolution_s, 1..=u32::MAX)?;
    // Without `resolution` the caller gets every resolution ([`resolutions`]); the one
    // set here is replaced per resolution.
    let vantage = match q.get("vantageMode") {
        None => Vantage::Observed,
        Some(v) => Vantage::parse(v).map_err(|e| Problem::invalid("vantageMode", e.to_string()))?,
    };
    Ok(HistoryQuery {
        scope_id,
        resolution,
        vantage,
        from_ms,
        to_ms,
        limit: LIST_ROWS_MAX,
        descending: false,
    })
}

/// `GET /capsules`, `GET /history`, `GET /history/{scopeId}`: one node's capsules in
/// window order, paginated. `totalElements` counts at most the store's history cap
/// (10,000 rows per query).
fn list_capsules(app: &App, meta: &Meta, q: &Query<'_>, scope: Option<&str>) -> Result<Response<Body>, Problem> {
    let mut hq = history_query(app, q, scope)?;
    let paging = Paging::parse(q, "timestamp", app.cfg.page_size_default, app.cfg.page_size_max, false)?;
    hq.descending = paging.descending;
    let store = store(app)?;
    let rows = match q.get("resolution") {
        Some(_) => store.history(&hq).map_err(store_problem)?,
        None => every_resolution(store, hq, &resolutions(app))?,
    };
    let start = paging.offset().min(rows.len());
    let end = start.saturating_add(paging.size).min(rows.len());
    let pagination = Pagination::of(paging.page, paging.size, rows.len());
    Ok(envelope::data(
        meta,
        StatusCode::OK,
        &CapsuleList(&rows[start..end]),
        Some(&pagination),
    ))
}

/// The resolutions a list without `resolution` covers: every roll-up resolution and the
/// slice's default, ascending, each once. (The store's index leads with the resolution,
/// so an API-created capsule at another resolution is found only when asked for.)
fn resolutions(app: &App) -> Vec<u32> {
    let mut r = app.ctx.config().persist.resolutions.clone();
    r.push(app.cfg.slice_resolution_s);
    r.sort_unstable();
    r.dedup();
    r
}

/// `hq` at each of `resolutions`, merged in window order (then resolution), at most
/// [`LIST_ROWS_MAX`] rows like one query.
fn every_resolution(store: &Store, hq: HistoryQuery, resolutions: &[u32]) -> Result<Vec<Capsule>, Problem> {
    let mut rows = Vec::new();
    for &resolution in resolutions {
        let q = HistoryQuery {
            resolution,
            scope_id: hq.scope_id.clone(),
            vantage: hq.vantage.clone(),
            ..hq
        };
        rows.extend(store.history(&q).map_err(store_problem)?);
    }
    let key = |c: &Capsule| (c.key.timestamp, c.key.resolution);
    if hq.descending {
        rows.sort_by_key(|c| std::cmp::Reverse(key(c)));
    } else {
        rows.sort_by_key(key);
    }
    rows.truncate(LIST_ROWS_MAX);
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// Rules

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    /// `toml` or `json`.
    format: String,
    /// The rule file's text.
    text: String,
}

async fn put_rules(
    app: &App,
    meta: &Meta,
    parts: &Parts,
    q: &Query<'_>,
    body: &[u8],
) -> Result<Response<Body>, Problem> {
    let dry_run = match q.get("dryRun") {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(_) => return Err(Problem::invalid("dryRun", "must be true or false")),
    };
    let is_json = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let (format, text) = if is_json {
        let b: RulesBody = serde_json::from_slice(body).map_err(|e| {
            Problem::new(Code::Validation, format!("invalid rules JSON: {e}")).with(Detail::field(
                "body",
                "expected {\"format\": \"toml\"|\"json\", \"text\": \"...\"}",
            ))
        })?;
        (b.format, b.text)
    } else {
        let text = std::str::from_utf8(body).map_err(|_| Problem::invalid("body", "rule text must be UTF-8"))?;
        ("toml".to_owned(), text.to_owned())
    };
    if format != "toml" && format != "json" {
        return Err(Problem::invalid("format", "must be toml or json"));
    }
    let outcome = if dry_run {
        app.ctx.dry_run_rules(&text, &format).map(|d| {
            envelope::data(
                meta,
                StatusCode::OK,
                &DryRun {
                    dry_run: true,
                    changes: d,
                },
                None,
            )
        })
    } else {
        replace_rules(app, &text, &format)
            .await
            .map(|view| envelope::data(meta, StatusCode::OK, &view, None))
    };
    match outcome {
        Ok(response) => Ok(response),
        Err(super::context::RulesRefused::Compile(errors)) => {
            let mut p = Problem::new(
                Code::Validation,
                format!(
                    "the rule set does not compile ({} errors); the running set stays",
                    errors.len()
                ),
            );
            p.details = errors.into_iter().map(|m| Detail::field("text", m)).collect();
            Err(p)
        }
        Err(e @ super::context::RulesRefused::Unavailable(_)) => Err(Problem::new(Code::Unavailable, e.to_string())),
        Err(e @ super::context::RulesRefused::Store(_)) => Err(Problem::new(Code::Internal, e.to_string())),
    }
}

/// What `PUT /rules?dryRun=true` answers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DryRun {
    dry_run: bool,
    #[serde(flatten)]
    changes: crate::plane::RulesDiff,
}

/// What `GET /rules/history` answers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RulesHistory {
    /// The generation in force.
    current: u64,
    /// Whether the history survives a restart (persistence on).
    durable: bool,
    /// The installed sets, newest first.
    sets: Vec<crate::rulebook::RuleSummary>,
}

fn rules_history(app: &App, meta: &Meta) -> Response<Body> {
    let (sets, durable) = app.ctx.rules_history();
    let current = app.ctx.rules().generation;
    envelope::data(meta, StatusCode::OK, &RulesHistory { current, durable, sets }, None)
}

fn rules_of(app: &App, meta: &Meta, generation: &str) -> Result<Response<Body>, Problem> {
    let g: u64 = generation
        .parse()
        .map_err(|_| Problem::invalid("generation", "must be a rule-set generation (an unsigned integer)"))?;
    match app.ctx.rules_of(g) {
        Some(record) => Ok(envelope::data(meta, StatusCode::OK, &record, None)),
        None => Err(Problem::new(
            Code::NotFound,
            format!("no rule set of generation {g} is kept"),
        )),
    }
}

/// Replaces the rule set, waiting out (up to [`RULES_BUSY_WAIT`]) a plane that has not
/// yet handed the previous set to every shard, so quick successive PUTs do not fail.
async fn replace_rules(
    app: &App,
    text: &str,
    format: &str,
) -> Result<super::context::RulesView, super::context::RulesRefused> {
    let deadline = std::time::Instant::now() + RULES_BUSY_WAIT;
    loop {
        match app.ctx.put_rules(text, format) {
            Err(super::context::RulesRefused::Unavailable(_)) if std::time::Instant::now() < deadline => {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decisions

/// A decision as the API shows it (camelCase, evidence as objects).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView<'a> {
    shard: u32,
    chain_seq: u64,
    epoch: u64,
    rule_id: &'a str,
    rule_version: u32,
    rule_generation: u64,
    severity: &'a str,
    rim_node_id: &'a str,
    event_seq: u64,
    event_timestamp: i64,
    sweep: bool,
    evidence: Vec<Evidence<'a>>,
    latency_ns: u64,
    publish_ns: u64,
    decided_ns: u64,
    prev_hash: &'a str,
    hash: &'a str,
}

#[derive(Serialize)]
struct Evidence<'a> {
    label: &'a str,
    value: Option<f64>,
}

impl<'a> DecisionView<'a> {
    /// The view of `d`.
    pub fn of(d: &'a Decision) -> Self {
        Self {
            shard: d.shard,
            chain_seq: d.chain_seq,
            epoch: d.epoch,
            rule_id: &d.rule_id,
            rule_version: d.rule_version,
            rule_generation: d.rule_generation,
            severity: &d.severity,
            rim_node_id: &d.rim_node_id,
            event_seq: d.event_seq,
            event_timestamp: d.event_timestamp,
            sweep: d.sweep,
            evidence: d
                .evidence
                .iter()
                .map(|(label, value)| Evidence {
                    label,
                    value: value.filter(|v| v.is_finite()),
                })
                .collect(),
            latency_ns: d.latency_ns,
            publish_ns: d.publish_ns,
            decided_ns: d.decided_ns,
            prev_hash: &d.prev_hash,
            hash: &d.hash,
        }
    }
}

struct DecisionList<'a>(&'a [Decision]);

impl Serialize for DecisionList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(DecisionView::of))
    }
}

fn shards(app: &App) -> u16 {
    let n = app
        .ctx
        .decision_segments()
        .len()
        .max(app.ctx.config().topology.reflex_shards)
        .max(1);
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// `GET /decisions`: the audit log of one shard (`shard`, default 0), by chain sequence,
/// newest first unless `sort=chainSeq,asc`; `rimNodeId` keeps one node's decisions
/// (scanning at most 100,000 records).
fn list_decisions(app: &App, meta: &Meta, q: &Query<'_>) -> Result<Response<Body>, Problem> {
    let shard = q.int("shard", 0u16, 0..=shards(app) - 1)?;
    let node = q.get("rimNodeId");
    if let Some(n) = node {
        check_node("rimNodeId", n)?;
    }
    let paging = Paging::parse(q, "chainSeq", app.cfg.page_size_default, app.cfg.page_size_max, true)?;
    let log = log(app)?;
    let Some((last, _)) = log.last_decision(shard).map_err(log_problem)? else {
        return Ok(envelope::data(
            meta,
            StatusCode::OK,
            &DecisionList(&[]),
            Some(&Pagination::of(paging.page, paging.size, 0)),
        ));
    };
    let (rows, total) = match node {
        None => page_of_chain(&log, shard, last, paging)?,
        Some(n) => filtered(&log, shard, last, n, paging)?,
    };
    Ok(envelope::data(
        meta,
        StatusCode::OK,
        &DecisionList(&rows),
        Some(&Pagination::of(paging.page, paging.size, total)),
    ))
}

fn decode_rows(rows: Vec<(u64, Vec<u8>)>) -> Vec<Decision> {
    rows.iter()
        .filter_map(|(seq, bytes)| match decision::decode(bytes) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(seq, error = %e, "undecodable decision in the audit log");
                None
            }
        })
        .collect()
}

/// One page of the chain `1..=last` by sequence number.
fn page_of_chain(log: &DecisionLog, shard: u16, last: u64, p: Paging) -> Result<(Vec<Decision>, usize), Problem> {
    let total = usize::try_from(last).unwrap_or(usize::MAX);
    let offset = p.offset() as u64;
    let size = p.size as u64;
    if offset >= last {
        return Ok((Vec::new(), total));
    }
    let (from, n) = if p.descending {
        let hi = last - offset;
        let lo = hi.saturating_sub(size - 1).max(1);
        (lo, hi - lo + 1)
    } else {
        (offset + 1, size.min(last - offset))
    };
    let rows = log.decisions(shard, from, n as usize).map_err(log_problem)?;
    let rows: Vec<(u64, Vec<u8>)> = rows.into_iter().filter(|(seq, _)| *seq < from + n).collect();
    let mut out = decode_rows(rows);
    if p.descending {
        out.reverse();
    }
    Ok((out, total))
}

/// One node's decisions, scanning newest first (or oldest first) in chunks.
fn filtered(
    log: &DecisionLog,
    shard: u16,
    last: u64,
    node: &str,
    p: Paging,
) -> Result<(Vec<Decision>, usize), Problem> {
    let mut matched = Vec::new();
    let mut scanned = 0usize;
    // Chunks of sequence numbers; a restart's gap gives empty chunks, which are skipped.
    let mut cursor: u64 = if p.descending { last } else { 1 };
    let mut turns = 0usize;
    while scanned < DECISION_SCAN_MAX && turns < DECISION_SCAN_MAX && cursor >= 1 && cursor <= last {
        turns += 1;
        let rows = if p.descending {
            let lo = cursor.saturating_sub(DECISION_CHUNK as u64 - 1).max(1);
            let rows = log.decisions(shard, lo, DECISION_CHUNK).map_err(log_problem)?;
            let upto = cursor;
            cursor = lo - 1;
            rows.into_iter().filter(|(seq, _)| *seq <= upto).collect::<Vec<_>>()
        } else {
            let rows = log.decisions(shard, cursor, DECISION_CHUNK).map_err(log_problem)?;
            let Some(&(next, _)) = rows.last() else {
                break;
            };
            cursor = next.saturating_add(1);
            rows
        };
        scanned += rows.len();
        let mut chunk: Vec<Decision> = decode_rows(rows)
            .into_iter()
            .filter(|d| d.rim_node_id == node)
            .collect();
        if p.descending {
            chunk.reverse();
        }
        matched.append(&mut chunk);
    }
    let total = matched.len();
    let start = p.offset().min(total);
    let end = start.saturating_add(p.size).min(total);
    Ok((matched.drain(start..end).collect(), total))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardVerdict {
    shard: u16,
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Verification {
    valid: bool,
    shards: Vec<ShardVerdict>,
}

/// Verifies one shard's stored chain from its oldest record to its newest.
fn verify_shard(log: &DecisionLog, shard: u16) -> Result<ShardVerdict, LogError> {
    let mut v = Verifier::new();
    let mut verdict = ShardVerdict {
        shard,
        records: 0,
        first_seq: None,
        last_seq: None,
        valid: true,
        error: None,
    };
    let mut from = 0u64;
    loop {
        let rows = log.decisions(shard, from, DECISION_CHUNK)?;
        let Some((last_seq, _)) = rows.last() else {
            return Ok(verdict);
        };
        from = last_seq.saturating_add(1);
        for (seq, bytes) in &rows {
            verdict.first_seq.get_or_insert(*seq);
            verdict.last_seq = Some(*seq);
            verdict.records += 1;
            if let Err(e) = v.push(bytes) {
                verdict.valid = false;
                verdict.error = Some(format!("at stored seq {seq}: {e}"));
                return Ok(verdict);
            }
        }
        if rows.len() < DECISION_CHUNK || *last_seq == u64::MAX {
            return Ok(verdict);
        }
    }
}

/// `GET /decisions/verify`: the hash chain of every shard's stored audit log (the same
/// [`Verifier`] as `rimctl tail --verify`), on the blocking pool.
async fn verify_decisions(app: &App, meta: &Meta) -> Result<Response<Body>, Problem> {
    let log = log(app)?;
    let n = shards(app);
    let verdicts = glommio::executor()
        .spawn_blocking(move || (0..n).map(|k| verify_shard(&log, k)).collect::<Result<Vec<_>, _>>())
        .await
        .map_err(log_problem)?;
    let v = Verification {
        valid: verdicts.iter().all(|s| s.valid),
        shards: verdicts,
    };
    Ok(envelope::data(meta, StatusCode::OK, &v, None))
}

// ---------------------------------------------------------------------------------------
// Health

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

#[derive(Serialize)]
struct Component<'a> {
    name: &'a str,
    status: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct ReadyView<'a> {
    status: &'static str,
    ready: bool,
    components: Vec<Component<'a>>,
}

/// `GET /health/ready`: 200 when ready, else 503; the body lists the components either way.
fn ready(app: &App, meta: &Meta) -> Response<Body> {
    let r = app.ctx.readiness();
    let view = ReadyView {
        status: if r.ready { "UP" } else { "DOWN" },
        ready: r.ready,
        components: r
            .components
            .iter()
            .map(|(name, status, reason)| Component { name, status, reason })
            .collect(),
    };
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    envelope::data(meta, status, &view, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_render_as_lower_case_hex() {
        let id = CapsuleId([0xab; 32]);
        let mut buf = [0u8; 64];
        assert_eq!(hex_id(&id, &mut buf), id.to_string());
    }

    #[test]
    fn routes_resolve_and_refuse_with_404_or_405() {
        let get = Method::GET;
        assert_eq!(resolve(&get, "/api/v1/ping").expect("ping"), Route::Ping);
        assert_eq!(
            resolve(&get, "/api/v1/temporal/slice/rim%3Aa%3Ab%3Ac").expect("slice"),
            Route::Slice("rim:a:b:c".into())
        );
        assert_eq!(resolve(&get, "/api/v1/capsules/").expect("list"), Route::Capsules);
        assert_eq!(resolve(&get, "/nope").expect_err("404").code, Code::NotFound);
        assert_eq!(
            resolve(&get, "/api/v1/capsules/a/b").expect_err("404").code,
            Code::NotFound
        );
        let p = resolve(&Method::DELETE, "/api/v1/rules").expect_err("405");
        assert_eq!((p.code, p.allow), (Code::MethodNotAllowed, Some("GET, PUT")));
        assert_eq!(
            resolve(&Method::GET, "/api/v1/events").expect_err("405").code,
            Code::MethodNotAllowed
        );
    }
}
