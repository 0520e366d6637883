//! Correlation ids carried from an inbound Kafka message to the decisions its event
//! triggers: `X-Request-ID`, `X-Correlation-ID` and `traceparent` headers, remembered per
//! (node, event time) in a bounded table (oldest entries leave first).

use std::collections::{HashMap, VecDeque};

/// Entries kept at most.
pub const TRACES_MAX: usize = 16_384;

/// The ids found on one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceIds {
    /// `X-Request-ID`.
    pub request_id: Option<String>,
    /// `X-Correlation-ID` (the request id when the message had none).
    pub correlation_id: Option<String>,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
}

impl TraceIds {
    /// Picks the ids out of a message's headers (names compared case-insensitively, values
    /// kept when UTF-8 and at most 256 bytes); `None` when there are none.
    pub fn from_headers(headers: &[(String, Option<Vec<u8>>)]) -> Option<TraceIds> {
        let mut ids = TraceIds::default();
        for (k, v) in headers {
            let Some(v) = v.as_deref().filter(|v| v.len() <= 256) else {
                continue;
            };
            let Ok(v) = std::str::from_utf8(v) else { continue };
            let slot = if k.eq_ignore_ascii_case("x-request-id") {
                &mut ids.request_id
            } else if k.eq_ignore_ascii_case("x-correlation-id") {
                &mut ids.correlation_id
            } else if k.eq_ignore_ascii_case("traceparent") {
                &mut ids.traceparent
            } else {
                continue;
            };
            *slot = Some(v.to_owned());
        }
        if ids.correlation_id.is_none() {
            ids.correlation_id = ids.request_id.clone();
        }
        (ids != TraceIds::default()).then_some(ids)
    }
}

/// The bounded table.
#[derive(Debug, Default)]
pub struct Traces {
    map: HashMap<(String, i64), TraceIds>,
    order: VecDeque<(String, i64)>,
}

impl Traces {
    /// Remembers the ids of `node`'s event at `timestamp`.
    pub fn insert(&mut self, node: &str, timestamp: i64, ids: TraceIds) {
        let key = (node.to_owned(), timestamp);
        if self.map.insert(key.clone(), ids).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > TRACES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// The ids of `node`'s event at `timestamp`, if it came with some.
    pub fn get(&self, node: &str, timestamp: i64) -> Option<&TraceIds> {
        self.map.get(&(node.to_owned(), timestamp))
    }

    /// Entries held (the tests' view of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> (String, Option<Vec<u8>>) {
        (k.to_owned(), Some(v.as_bytes().to_vec()))
    }

    #[test]
    fn ids_are_picked_case_insensitively_and_the_request_id_correlates_by_default() {
        let ids = TraceIds::from_headers(&[h("X-Request-Id", "r1"), h("other", "x")]).expect("ids");
        assert_eq!(ids.request_id.as_deref(), Some("r1"));
        assert_eq!(ids.correlation_id.as_deref(), Some("r1"));
        assert_eq!(ids.traceparent, None);
        assert_eq!(
            TraceIds::from_headers(&[h("other", "x"), ("x-request-id".into(), None)]),
            None
        );
        let bad = ("traceparent".to_owned(), Some(vec![0xff, 0xfe]));
        assert_eq!(TraceIds::from_headers(&[bad]), None);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let mut t = Traces::default();
        let ids = TraceIds {
            request_id: Some("r".into()),
            ..TraceIds::default()
        };
        for ts in 0..(TRACES_MAX as i64 + 10) {
            t.insert("rim:a:b:c", ts, ids.clone());
        }
        assert_eq!(t.len(), TRACES_MAX);
        assert!(t.get("rim:a:b:c", 0).is_none());
        assert!(t.get("rim:a:b:c", TRACES_MAX as i64 + 9).is_some());
    }
}
