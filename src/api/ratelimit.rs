//! Rate limits per client and class (the platform's "Query APIs 1000 req/min, Command
//! APIs 100 req/min"): a fixed one-minute window per (client, class), which makes the
//! `X-RateLimit-Reset` header exact (the epoch second the window ends).
//!
//! The client is the bearer token's digest when authenticated, else the peer IP. Owned
//! by the single HTTP thread, so no lock: a `HashMap` bounded at `rate_clients_max`
//! entries (expired windows are swept first, then the oldest window goes).

use std::collections::HashMap;
use std::net::IpAddr;

/// The class a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Reads.
    Query,
    /// Writes.
    Command,
}

/// Who is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated token (its digest prefix).
    Token(u64),
    /// An anonymous peer.
    Ip(IpAddr),
}

/// What the headers say, and whether the request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed.
    pub allowed: bool,
    /// Requests per window.
    pub limit: u32,
    /// Left in this window.
    pub remaining: u32,
    /// When the window ends, epoch seconds.
    pub reset_epoch_s: u64,
    /// Seconds until then (at least 1).
    pub retry_after_s: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    used: u32,
}

const WINDOW_MS: i64 = 60_000;

/// The limiter.
#[derive(Debug)]
pub struct RateLimiter {
    query_per_min: u32,
    command_per_min: u32,
    clients_max: usize,
    windows: HashMap<(ClientKey, Class), Window>,
}

impl RateLimiter {
    /// Limits per minute (0 = unlimited) and the clients tracked at most.
    pub fn new(query_per_min: u32, command_per_min: u32, clients_max: usize) -> Self {
        Self {
            query_per_min,
            command_per_min,
            clients_max: clients_max.max(1),
            windows: HashMap::new(),
        }
    }

    fn limit(&self, class: Class) -> u32 {
        match class {
            Class::Query => self.query_per_min,
            Class::Command => self.command_per_min,
        }
    }

    /// Counts one request of `client` in `class` at `now_ms`; `None` when the class is
    /// unlimited.
    pub fn check(&mut self, client: ClientKey, class: Class, now_ms: i64) -> Option<Verdict> {
        let limit = self.limit(class);
        if limit == 0 {
            return None;
        }
        if !self.windows.contains_key(&(client, class)) && self.windows.len() >= self.clients_max {
            self.make_room(now_ms);
        }
        let w = self.windows.entry((client, class)).or_insert(Window {
            start_ms: now_ms,
            used: 0,
        });
        if now_ms - w.start_ms >= WINDOW_MS || now_ms < w.start_ms {
            *w = Window {
                start_ms: now_ms,
                used: 0,
            };
        }
        let allowed = w.used < limit;
        if allowed {
            w.used += 1;
        }
        let end_ms = w.start_ms + WINDOW_MS;
        Some(Verdict {
            allowed,
            limit,
            remaining: limit - w.used,
            reset_epoch_s: (end_ms.max(0) as u64).div_ceil(1000),
            retry_after_s: ((end_ms - now_ms).max(1) as u64).div_ceil(1000),
        })
    }

    /// Forgets expired windows, or else the oldest one.
    fn make_room(&mut self, now_ms: i64) {
        self.windows.retain(|_, w| now_ms - w.start_ms < WINDOW_MS);
        if self.windows.len() >= self.clients_max {
            let oldest = self.windows.iter().min_by_key(|(_, w)| w.start_ms).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.windows.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: ClientKey = ClientKey::Ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn a_window_allows_the_limit_then_refuses_until_reset() {
        let mut r = RateLimiter::new(1000, 2, 10);
        let t = 1_000_000;
        let a = r.check(IP, Class::Command, t).expect("limited");
        assert!(a.allowed);
        assert_eq!(a.remaining, 1);
        assert!(r.check(IP, Class::Command, t + 1).expect("limited").allowed);
        let c = r.check(IP, Class::Command, t + 2).expect("limited");
        assert!(!c.allowed);
        assert_eq!(c.remaining, 0);
        assert_eq!(c.retry_after_s, 60);
        assert_eq!(c.reset_epoch_s, 1_060);
        // Queries are counted apart.
        assert!(r.check(IP, Class::Query, t + 3).expect("limited").allowed);
        assert!(r.check(IP, Class::Command, t + 60_000).expect("limited").allowed);
    }

    #[test]
    fn zero_means_unlimited_and_the_table_stays_bounded() {
        let mut r = RateLimiter::new(0, 5, 3);
        assert!(r.check(IP, Class::Query, 0).is_none());
        for i in 0..100u64 {
            r.check(ClientKey::Token(i), Class::Command, i as i64);
        }
        assert!(r.windows.len() <= 3);
    }
}
