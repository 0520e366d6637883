//! Query strings: percent-decoding, typed parameters with 400s that name the parameter,
//! and the platform's `page`/`size`/`sort` convention.

use std::borrow::Cow;

use super::envelope::Problem;

/// The decoded `key=value` pairs of a query string (first occurrence wins).
#[derive(Debug, Default)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses `raw` (without the `?`). Undecodable escapes are a 400.
    pub fn parse(raw: Option<&'a str>) -> Result<Self, Problem> {
        let mut pairs = Vec::new();
        let Some(raw) = raw else {
            return Ok(Self { pairs });
        };
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(k).ok_or_else(|| Problem::invalid("query", "malformed percent-encoding"))?;
            let v = decode(v).ok_or_else(|| Problem::invalid(&k, "malformed percent-encoding"))?;
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// `key` as an integer in `range`, or `default` when absent.
    pub fn int<T>(&self, key: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, Problem>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Problem::invalid(
                key,
                format!("must be an integer in {}..={}", range.start(), range.end()),
            )),
        }
    }

    /// `key` as an optional integer in `range`.
    pub fn opt_int<T>(&self, key: &str, range: std::ops::RangeInclusive<T>) -> Result<Option<T>, Problem>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.int(key, *range.start(), range).map(Some),
        }
    }
}

/// Percent-decodes one component (`+` is a space); `None` for a bad escape or non-UTF-8.
fn decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Percent-decodes a path segment (no `+` rule); `None` for a bad escape or non-UTF-8.
pub fn decode_path(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `page`, `size` and the sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// From 0.
    pub page: usize,
    /// Elements per page.
    pub size: usize,
    /// Newest (largest) first.
    pub descending: bool,
}

impl Paging {
    /// Reads `page`, `size` and `sort` (`<field>` or `<field>,asc|desc`, with `field` the
    /// one this list sorts by).
    pub fn parse(
        q: &Query<'_>,
        field: &str,
        size_default: usize,
        size_max: usize,
        descending_default: bool,
    ) -> Result<Self, Problem> {
        let page = q.int("page", 0usize, 0..=1_000_000)?;
        let size = q.int("size", size_default, 1..=size_max)?;
        let descending = match q.get("sort") {
            None => descending_default,
            Some(s) => {
                let (f, dir) = s.split_once(',').unwrap_or((s, "asc"));
                if f != field {
                    return Err(Problem::invalid("sort", format!("can only sort by {field}")));
                }
                match dir.to_ascii_lowercase().as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(Problem::invalid("sort", "direction must be asc or desc")),
                }
            }
        };
        Ok(Self { page, size, descending })
    }

    /// Index of the first element of the page.
    pub fn offset(&self) -> usize {
        self.page.saturating_mul(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_decoded_and_typed() {
        let q = Query::parse(Some("scopeId=rim%3Asensor%3Aa%3Ab&size=5&x")).expect("parse");
        assert_eq!(q.get("scopeId"), Some("rim:sensor:a:b"));
        assert_eq!(q.int("size", 20usize, 1..=100).expect("size"), 5);
        assert_eq!(q.get("x"), Some(""));
        assert!(q.int("size", 20usize, 1..=4).is_err());
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err());
    }

    #[test]
    fn sort_names_its_field_and_direction() {
        let q = Query::parse(Some("sort=timestamp,desc&page=2&size=10")).expect("parse");
        let p = Paging::parse(&q, "timestamp", 20, 100, false).expect("paging");
        assert_eq!((p.page, p.size, p.descending, p.offset()), (2, 10, true, 20));
        let q = Query::parse(Some("sort=price")).expect("parse");
        assert!(Paging::parse(&q, "timestamp", 20, 100, false).is_err());
    }
}
