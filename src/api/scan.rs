//! The fast reader of `POST /events` batches: a JSON array of RimFastEvent objects read in
//! one pass straight into borrowed fields, for the common shape producers send.
//!
//! It is a filter, not a second JSON parser of record: it accepts a strict subset of what
//! `serde_json` accepts (the owned path in [`super::events`]) and must give the same
//! values for it. Anything outside the subset makes [`read`] answer `None` and the body
//! goes to `serde_json`, which accepts or refuses it and names what is wrong. The subset:
//! - valid UTF-8 (checked once for the whole body), an array of 1.. objects, JSON
//!   whitespace between tokens, nothing after the array;
//! - strings without a backslash or a control character (escapes take the owned path);
//! - each object's keys among RimFastEvent's fields, none repeated, the required ones
//!   present; `null` only where the field is optional;
//! - numbers in JSON's grammar, converted by the standard library (correctly rounded, as
//!   `serde_json` with `float_roundtrip`, which the workspace enables); integer fields
//!   take integer literals only;
//! - `critical_metrics` an object of at most `metrics_max` names, none repeated, each to
//!   a number.
//!
//! Why not a crate: measured side by side on a batch of 2,000 events of 258 bytes (the
//! bench's), `serde_json` into borrowed structs took 0.8–1.5 µs per event, `sonic-rs`
//! through the same serde impls the same, and this reader 0.6–0.85 µs (the spread is the
//! machine's); the serde visitor's field matching, a vector per event and the general
//! number parser are what it leaves out.
//!
//! The differential test below and the fuzz target `http_bodies` hold it to `serde_json`.

use rim_ring::event::EventRef;
use rim_ring::same_bytes;

/// One event as read: strings borrowed from the body, metrics as a range of the batch's
/// shared metric list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scanned<'a> {
    pub rim_node_id: &'a str,
    pub event_id: Option<&'a str>,
    pub timestamp: i64,
    /// `critical_metrics`: `Batch::metrics[metrics.0..metrics.1]`.
    pub metrics: (usize, usize),
    pub price: Option<f64>,
    pub volume: Option<f64>,
    pub stress: Option<f64>,
    pub status: &'a str,
    pub source_topic: Option<&'a str>,
    pub publish_ns: u64,
}

/// A batch as read.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub events: Vec<Scanned<'a>>,
    /// Every event's metrics, in order.
    pub metrics: Vec<(&'a str, f64)>,
}

impl<'a> Batch<'a> {
    /// The metrics of `ev`.
    pub fn metrics_of(&self, ev: &Scanned<'a>) -> &[(&'a str, f64)] {
        self.metrics.get(ev.metrics.0..ev.metrics.1).unwrap_or(&[])
    }

    /// `ev` as the ring's borrowed event.
    pub fn event_ref<'b>(&'b self, ev: &Scanned<'b>) -> EventRef<'b> {
        EventRef {
            rim_node_id: ev.rim_node_id,
            event_id: ev.event_id,
            timestamp: ev.timestamp,
            critical_metrics: self.metrics_of(ev),
            price: ev.price,
            volume: ev.volume,
            stress: ev.stress,
            status: ev.status,
            source_topic: ev.source_topic,
            publish_ns: ev.publish_ns,
        }
    }
}

/// Reads `body` as a batch of at most `batch_max` events, each with at most
/// `metrics_max` metrics; `None` when the body is outside the subset this reader takes.
pub fn read(body: &[u8], batch_max: usize, metrics_max: usize) -> Option<Batch<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut r = Reader { text, b: body, at: 0 };
    let mut batch = Batch {
        // About 260 bytes per event in what producers send.
        events: Vec::with_capacity((body.len() / 200).clamp(1, batch_max.max(1))),
        metrics: Vec::new(),
    };
    batch.metrics.reserve(batch.events.capacity() * 4);
    r.expect(b'[')?;
    loop {
        if batch.events.len() == batch_max {
            return None;
        }
        let ev = r.event(&mut batch.metrics, metrics_max)?;
        batch.events.push(ev);
        match r.next_token()? {
            b',' => continue,
            b']' => break,
            _ => return None,
        }
    }
    r.skip_ws();
    (r.at == r.b.len()).then_some(batch)
}

/// RimFastEvent's fields in the schema's order; field `i`'s bit in the seen-mask is
/// `1 << i`.
const KEYS: [&str; 10] = [
    "rim_node_id",
    "event_id",
    "timestamp",
    "critical_metrics",
    "price",
    "volume",
    "stress",
    "status",
    "source_topic",
    "publish_ns",
];

/// Each field's index in [`KEYS`].
mod field {
    pub const NODE: usize = 0;
    pub const EVENT_ID: usize = 1;
    pub const TIMESTAMP: usize = 2;
    pub const METRICS: usize = 3;
    pub const PRICE: usize = 4;
    pub const VOLUME: usize = 5;
    pub const STRESS: usize = 6;
    pub const STATUS: usize = 7;
    pub const TOPIC: usize = 8;
    pub const PUBLISH_NS: usize = 9;
    /// The seen-mask of the fields without a default.
    pub const REQUIRED: u16 = 1 << NODE | 1 << TIMESTAMP | 1 << METRICS | 1 << STATUS;
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_ws();
        let c = *self.b.get(self.at)?;
        self.at += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next_token()? == c).then_some(())
    }

    /// A string without escapes or control characters; the opening quote is next.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = self.b.get(start..)?;
        let len = first_special(rest)?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.at = start + len + 1;
        // Both ends sit next to an ASCII quote, so on char boundaries of valid UTF-8.
        self.text.get(start..start + len)
    }

    /// A number in JSON's grammar: its text, and its digits as an integer with a
    /// decimal exponent when they fit in a `u64`.
    fn number(&mut self) -> Option<Num<'a>> {
        self.skip_ws();
        let start = self.at;
        let b = self.b;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut digits = Digits::default();
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i += digits.take(b, i),
            _ => return None,
        }
        let mut integer = true;
        let mut exp10: i64 = 0;
        if b.get(i) == Some(&b'.') {
            let n = digits.take(b, i + 1);
            if n == 0 {
                return None;
            }
            i += 1 + n;
            exp10 -= n as i64;
            integer = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            let sign = match b.get(i) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            if sign != 0 {
                i += 1;
            }
            let mut e = Digits::default();
            let n = e.take(b, i);
            if n == 0 {
                return None;
            }
            i += n;
            // An exponent past 18 digits is out of every fast path's range anyway.
            let e = if e.count <= 18 {
                i64::try_from(e.value).unwrap_or(i64::MAX)
            } else {
                i64::MAX
            };
            exp10 = if sign < 0 {
                exp10.saturating_sub(e)
            } else {
                exp10.saturating_add(e)
            };
            integer = false;
        }
        self.at = i;
        Some(Num {
            text: self.text.get(start..i)?,
            integer,
            negative,
            mantissa: (digits.count <= 19).then_some(digits.value),
            digits: digits.count,
            exp10,
        })
    }

    /// A finite number (`serde_json` refuses what overflows to infinity).
    fn f64(&mut self) -> Option<f64> {
        let n = self.number()?;
        n.fast_f64()
            .or_else(|| n.text.parse().ok())
            .filter(|v: &f64| v.is_finite())
    }

    fn i64(&mut self) -> Option<i64> {
        let n = self.number()?;
        if !n.integer {
            return None;
        }
        if n.negative && n.mantissa == Some(0) {
            // serde_json reads `-0` as the float -0.0, which no integer field takes.
            return None;
        }
        // Up to 18 digits the mantissa is the value and fits; longer, the exact parser
        // says whether it does.
        match n.mantissa.filter(|_| n.digits <= 18) {
            Some(m) => {
                let m = i64::try_from(m).ok()?;
                Some(if n.negative { -m } else { m })
            }
            None => n.text.parse().ok(),
        }
    }

    fn u64(&mut self) -> Option<u64> {
        let n = self.number()?;
        if !n.integer || n.negative {
            // No negative is a u64 to serde_json either (it reads `-0` as the float
            // -0.0): the owned path refuses the body and says why.
            return None;
        }
        match n.mantissa {
            Some(m) => Some(m),
            None => n.text.parse().ok(),
        }
    }

    /// `null` (consumed) or not (nothing consumed).
    fn null(&mut self) -> bool {
        self.skip_ws();
        let is_null = self.b.get(self.at..self.at + 4) == Some(b"null");
        if is_null {
            self.at += 4;
        }
        is_null
    }

    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if self.null() {
            Some(None)
        } else {
            self.f64().map(Some)
        }
    }

    /// One event object, its metrics appended to `metrics`.
    fn event(&mut self, metrics: &mut Vec<(&'a str, f64)>, metrics_max: usize) -> Option<Scanned<'a>> {
        self.expect(b'{')?;
        let mut ev = Scanned {
            rim_node_id: "",
            event_id: None,
            timestamp: 0,
            metrics: (metrics.len(), metrics.len()),
            price: None,
            volume: None,
            stress: None,
            status: "",
            source_topic: None,
            publish_ns: 0,
        };
        let mut seen = 0u16;
        self.skip_ws();
        if self.b.get(self.at) == Some(&b'}') {
            // `{}` lacks the required fields.
            return None;
        }
        let mut next = 0;
        loop {
            let field = self.key(next)?;
            next = field + 1;
            self.expect(b':')?;
            self.value(field, &mut ev, metrics, metrics_max)?;
            let bit = 1u16 << field;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match self.next_token()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        (seen & field::REQUIRED == field::REQUIRED).then_some(ev)
    }

    /// The index in [`KEYS`] of the key that comes next. Producers write the fields in
    /// the schema's order, so `guess` (the one after the last) is compared first, as
    /// bytes, quotes included; any other key is read as a string and looked up.
    fn key(&mut self, guess: usize) -> Option<usize> {
        self.skip_ws();
        if let Some(k) = KEYS.get(guess) {
            let rest = self.b.get(self.at..).unwrap_or(&[]);
            let quoted = rest.len() > k.len() + 1
                && rest.first() == Some(&b'"')
                && rest.get(1..=k.len()).is_some_and(|r| same_bytes(r, k.as_bytes()))
                && rest.get(k.len() + 1) == Some(&b'"');
            if quoted {
                self.at += k.len() + 2;
                return Some(guess);
            }
        }
        let key = self.string()?;
        KEYS.iter().position(|k| same_bytes(k.as_bytes(), key.as_bytes()))
    }

    /// The value of field `KEYS[field]` into `ev`.
    fn value(
        &mut self,
        field: usize,
        ev: &mut Scanned<'a>,
        metrics: &mut Vec<(&'a str, f64)>,
        metrics_max: usize,
    ) -> Option<()> {
        match field {
            field::NODE => ev.rim_node_id = self.string()?,
            field::EVENT_ID => ev.event_id = self.opt_str()?,
            field::TIMESTAMP => ev.timestamp = self.i64()?,
            field::METRICS => ev.metrics = self.metrics(metrics, metrics_max)?,
            field::PRICE => ev.price = self.opt_f64()?,
            field::VOLUME => ev.volume = self.opt_f64()?,
            field::STRESS => ev.stress = self.opt_f64()?,
            field::STATUS => ev.status = self.string()?,
            field::TOPIC => ev.source_topic = self.opt_str()?,
            field::PUBLISH_NS => ev.publish_ns = self.u64()?,
            _ => return None,
        }
        Some(())
    }

    /// `{"name": number, ...}` appended to `metrics`; its range there.
    fn metrics(&mut self, metrics: &mut Vec<(&'a str, f64)>, max: usize) -> Option<(usize, usize)> {
        let start = metrics.len();
        self.expect(b'{')?;
        self.skip_ws();
        if self.b.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Some((start, start));
        }
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            let v = self.f64()?;
            let mine = metrics.get(start..)?;
            // At most 64 names: a linear scan beats a set.
            if mine.len() == max || mine.iter().any(|(n, _)| same_bytes(n.as_bytes(), name.as_bytes())) {
                return None;
            }
            metrics.push((name, v));
            match self.next_token()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        Some((start, metrics.len()))
    }
}

/// A number as read.
struct Num<'a> {
    text: &'a str,
    /// No fraction, no exponent.
    integer: bool,
    negative: bool,
    /// The digits without the point, when at most 19 (so they fit).
    mantissa: Option<u64>,
    /// How many digits there are (leading zeros of a fraction included).
    digits: usize,
    /// The decimal exponent of `mantissa`.
    exp10: i64,
}

impl Num<'_> {
    /// Clinger's fast path: a mantissa of at most 53 bits and a power of ten up to 1e22
    /// are both exact in an f64, so one multiplication or division rounds correctly, as
    /// the exact parser would. `None` leaves the number to the exact parser.
    fn fast_f64(&self) -> Option<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
            1e19, 1e20, 1e21, 1e22,
        ];
        let m = self.mantissa.filter(|m| *m < 1 << 53)? as f64;
        let p = *POW10.get(usize::try_from(self.exp10.unsigned_abs()).ok()?)?;
        let v = if self.exp10 < 0 { m / p } else { m * p };
        Some(if self.negative { -v } else { v })
    }
}

/// Decimal digits read so far: their value (wrapping past 19 digits, when `count` says
/// not to use it) and how many.
#[derive(Default)]
struct Digits {
    value: u64,
    count: usize,
}

impl Digits {
    /// Takes the ASCII digits at `b[i..]`; how many.
    fn take(&mut self, b: &[u8], i: usize) -> usize {
        let run = b.get(i..).unwrap_or(&[]);
        let mut n = 0;
        for &c in run {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            self.value = self.value.wrapping_mul(10).wrapping_add(u64::from(d));
            n += 1;
        }
        self.count += n;
        n
    }
}

/// Index of the first `"`, `\\` or control character in `s`, eight bytes at a time
/// (strings are most of a batch's bytes).
fn first_special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit in `(x - ONES) & !x & HIGH` is set where the byte of x is 0,
    // exactly for the lowest such byte (a borrow can only mark bytes above it), and
    // `(w - n * ONES) & !w & HIGH` likewise where it is below n (n <= 0x80).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use rim_ring::event::RimFastEvent;

    use super::*;

    /// What `serde_json` makes of `body` as a batch, when it takes it.
    fn reference(body: &str) -> Option<Vec<RimFastEvent>> {
        serde_json::from_str(body).ok()
    }

    fn owned(batch: &Batch<'_>) -> Vec<RimFastEvent> {
        batch.events.iter().map(|e| batch.event_ref(e).to_event()).collect()
    }

    /// Whatever the reader takes, serde_json takes too, with the same values (bit for
    /// bit, so -0.0 and 0.0 differ).
    fn agrees(body: &str) -> bool {
        let Some(batch) = read(body.as_bytes(), 100, 64) else {
            return false;
        };
        let mine = owned(&batch);
        let theirs = reference(body).unwrap_or_else(|| panic!("the reader took what serde_json refuses: {body}"));
        assert_eq!(mine.len(), theirs.len(), "{body}");
        for (m, t) in mine.iter().zip(&theirs) {
            let bits = |v: Option<f64>| v.map(f64::to_bits);
            assert_eq!(m.rim_node_id, t.rim_node_id, "{body}");
            assert_eq!(m.event_id, t.event_id, "{body}");
            assert_eq!(m.timestamp, t.timestamp, "{body}");
            assert_eq!(m.status, t.status, "{body}");
            assert_eq!(m.source_topic, t.source_topic, "{body}");
            assert_eq!(m.publish_ns, t.publish_ns, "{body}");
            assert_eq!(bits(m.price), bits(t.price), "{body}");
            assert_eq!(bits(m.volume), bits(t.volume), "{body}");
            assert_eq!(bits(m.stress), bits(t.stress), "{body}");
            let names = |v: &[(String, f64)]| v.iter().map(|(n, x)| (n.clone(), x.to_bits())).collect::<Vec<_>>();
            assert_eq!(names(&m.critical_metrics), names(&t.critical_metrics), "{body}");
        }
        true
    }

    const BASE: &str = r#"{"rim_node_id":"rim:sensor:a:n1","timestamp":1,"critical_metrics":{"t":1.5},"status":"OK"}"#;

    fn with_price(p: &str) -> String {
        format!(
            r#"[{{"rim_node_id":"rim:a:b:c","timestamp":1,"critical_metrics":{{"x":{p}}},"price":{p},"status":"OK"}}]"#
        )
    }

    #[test]
    fn what_producers_send_is_read_as_serde_json_reads_it() {
        let full = r#"{"rim_node_id":"rim:sensor:site3:node00042","event_id":"h000000000012-00042","timestamp":1764748800123,"critical_metrics":{"temp":49.712,"load":0.5123,"probe":0,"m3":-0.2211},"price":100.37,"volume":1.0,"stress":0.1,"status":"OK","source_topic":"bench.http","publish_ns":17}"#;
        let spaced = " [ { \"rim_node_id\" : \"rim:a:b:c\" ,\n\t\"timestamp\" : -5 , \"critical_metrics\" : { } ,\r\"status\" : \"é☃\" , \"event_id\" : null , \"price\" : null } ] \n";
        for body in [
            format!("[{BASE}]"),
            format!("[{full},{BASE},{full}]"),
            spaced.to_owned(),
        ] {
            assert!(agrees(&body), "not taken: {body}");
        }
    }

    #[test]
    fn numbers_round_as_serde_json_rounds_them() {
        let numbers = [
            "0",
            "-0",
            "-0.0",
            "0.1",
            "0.30000000000000004",
            "1e22",
            "1e23",
            "9007199254740993",
            "9007199254740992.5",
            "123456789012345678901234567890",
            "2.2250738585072014e-308",
            "4.9e-324",
            "1.7976931348623157e308",
            "0.000001234",
            "1E5",
            "1e+5",
            "1e-5",
            "1.5e-10",
            "17976931348623157e292",
            "0.1e-0",
            "99.99",
            "-1.25e2",
            "1234567890.0987654321",
            "5e-324",
            "2e-323",
            "1.00000000000000011102230246251565404236316680908203125",
        ];
        for n in numbers {
            assert!(agrees(&with_price(n)), "not taken: {n}");
        }
    }

    #[test]
    fn integers_at_every_width_and_bound_read_as_serde_json_reads_them() {
        let timestamp = |t: &str| format!("[{}]", BASE.replace("\"timestamp\":1", &format!("\"timestamp\":{t}")));
        let publish_ns = |n: &str| format!("[{}]", BASE.replace("\"OK\"}", &format!("\"OK\",\"publish_ns\":{n}}}")));
        let taken = [
            "0",
            "7",
            "-7",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "-1000000000000000000",
            "9223372036854775807",
            "-9223372036854775808",
        ]
        .map(timestamp)
        .into_iter()
        .chain(
            [
                "0",
                "9999999999999999999",
                "10000000000000000000",
                "18446744073709551615",
            ]
            .map(publish_ns),
        );
        for body in taken {
            assert!(agrees(&body), "not taken: {body}");
        }
        // `-0` is the float -0.0 to serde_json.
        let left = [
            "-0",
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
        ]
        .map(timestamp)
        .into_iter()
        .chain(["18446744073709551616", "-0", "-1"].map(publish_ns));
        for body in left {
            assert!(!agrees(&body), "taken: {body}");
        }
    }

    #[test]
    fn anything_outside_the_subset_is_left_to_serde_json() {
        let outside = [
            String::new(),
            "[]".into(),
            "{}".into(),
            BASE.into(),
            "[{}]".into(),
            format!("[{BASE}"),
            format!("[{BASE}] x"),
            format!("[{BASE},]"),
            format!("[{BASE}]]"),
            BASE.replace("\"OK\"", "\"O\\u004b\""),
            BASE.replace("\"OK\"", "\"O\tK\""),
            BASE.replace("\"OK\"", "null"),
            BASE.replace("\"timestamp\":1", "\"timestamp\":1.0"),
            BASE.replace("\"timestamp\":1", "\"timestamp\":1e0"),
            BASE.replace("\"timestamp\":1", "\"timestamp\":9223372036854775808"),
            BASE.replace("\"timestamp\":1", "\"timestamp\":01"),
            BASE.replace("\"timestamp\":1", "\"timestamp\":null"),
            BASE.replace("\"timestamp\":1,", ""),
            BASE.replace("\"status\":\"OK\"", "\"status\":\"OK\",\"status\":\"OK\""),
            BASE.replace("\"status\":\"OK\"", "\"status\":\"OK\",\"extra\":1"),
            BASE.replace("1.5", "1.5,\"t\":2"),
            BASE.replace("1.5", "-"),
            BASE.replace("1.5", "1."),
            BASE.replace("1.5", ".5"),
            BASE.replace("1.5", "1e"),
            BASE.replace("1.5", "+1"),
            BASE.replace("1.5", "1e400"),
            BASE.replace("1.5", "NaN"),
            BASE.replace("1.5", "Infinity"),
            BASE.replace("1.5", "\"1.5\""),
            BASE.replace("1.5", "null"),
            BASE.replace("\"OK\"}", "\"OK\",\"publish_ns\":-1}"),
            BASE.replace("\"OK\"}", "\"OK\",\"publish_ns\":-0}"),
            BASE.replace("\"OK\"}", "\"OK\",\"price\":nul}"),
            BASE.replace("\"OK\"}", "\"OK\",\"price\":nullx}"),
        ];
        for body in &outside {
            // An object alone is the owned path's; the changed events go in a batch.
            let body = if body.starts_with('{') && body.len() > 2 && body != BASE {
                format!("[{body}]")
            } else {
                body.clone()
            };
            assert!(read(body.as_bytes(), 100, 64).is_none(), "taken: {body}");
        }
        // Bounds: events per batch, metrics per event, bytes that are not UTF-8.
        let three = format!("[{BASE},{BASE},{BASE}]");
        assert!(read(three.as_bytes(), 2, 64).is_none());
        assert!(read(three.as_bytes(), 3, 64).is_some());
        let two_metrics = BASE.replace("1.5", "1.5,\"u\":2");
        assert!(read(format!("[{two_metrics}]").as_bytes(), 10, 1).is_none());
        assert!(read(format!("[{two_metrics}]").as_bytes(), 10, 2).is_some());
        let mut bytes = format!("[{BASE}]").into_bytes();
        let at = bytes.iter().position(|&b| b == b'K').unwrap_or(0);
        bytes[at] = 0xff;
        assert!(read(&bytes, 10, 64).is_none());
    }

    #[test]
    fn garbage_never_panics_and_what_is_taken_agrees() {
        // Every prefix and every one-byte change of a full batch.
        let body = format!("[{BASE},{}]", BASE.replace("1.5", "-2.5e-3,\"v\":0"));
        for end in 0..=body.len() {
            if let Some(prefix) = body.get(..end) {
                if read(prefix.as_bytes(), 10, 64).is_some() {
                    assert!(agrees(prefix));
                }
            }
        }
        for at in 0..body.len() {
            for b in [
                b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'0', b'-', b'e', b'.', b' ', b'n', 0,
            ] {
                let mut v = body.clone().into_bytes();
                v[at] = b;
                if let Ok(text) = std::str::from_utf8(&v) {
                    if read(&v, 10, 64).is_some() {
                        assert!(agrees(text), "{text}");
                    }
                } else {
                    assert!(read(&v, 10, 64).is_none());
                }
            }
        }
    }

    #[test]
    fn the_string_scan_finds_the_first_special_byte_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x1f, 0] {
                    let mut s = vec![b'a'; len];
                    if at < len {
                        s[at] = special;
                        // A byte after it that also qualifies must not win.
                        if at + 1 < len {
                            s[at + 1] = b'"';
                        }
                    }
                    let want = (at < len).then_some(at);
                    assert_eq!(first_special(&s), want, "len {len} at {at} byte {special}");
                }
            }
        }
        // Bytes that are not special: 0x20, 0x7f, and UTF-8 continuation bytes.
        assert_eq!(
            first_special(&[0x20, 0x7f, 0xc3, 0xa9, 0x80, 0xff, b'x', b'y', b'"']),
            Some(8)
        );
    }
}
