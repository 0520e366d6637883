//! Node globs: `*` matches any run of characters (including `:`), `?` exactly one.
//!
//! Matching runs per event per rule, so it never allocates, and the common shapes (`*`,
//! an exact id, `prefix*`) skip the general matcher. The one matcher of rimd: the rule
//! language's `nodes` and the WebSocket's `node` filter both compile through [`Glob`].

/// Longest glob accepted, in bytes (a RimNodeId is at most 256).
pub const GLOB_BYTES_MAX: usize = 512;

/// A compiled glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Glob {
    /// `*` (or `**`…): everything.
    Any,
    /// No wildcard: the id itself.
    Exact(String),
    /// `prefix*` with no other wildcard.
    Prefix(String),
    /// Anything else.
    General(String),
}

impl Glob {
    /// Validates and compiles `pattern`. Only characters that can occur in a RimNodeId,
    /// plus `*` and `?`, are accepted: anything else could never match, so it is a typo.
    pub fn compile(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("a node glob may not be empty; use \"*\" for every node".to_owned());
        }
        if pattern.len() > GLOB_BYTES_MAX {
            return Err(format!("a node glob may be at most {GLOB_BYTES_MAX} bytes"));
        }
        if let Some(c) = pattern.chars().find(|&c| !glob_char_ok(c)) {
            return Err(format!(
                "a node glob may contain only [A-Za-z0-9_.:-], '*' and '?', found {c:?}"
            ));
        }
        Ok(Self::classify(pattern))
    }

    fn classify(pattern: &str) -> Self {
        let wild = |c: char| c == '*' || c == '?';
        if pattern.bytes().all(|b| b == b'*') {
            return Self::Any;
        }
        if !pattern.contains(wild) {
            return Self::Exact(pattern.to_owned());
        }
        if let Some(prefix) = pattern.strip_suffix('*') {
            if !prefix.contains(wild) {
                return Self::Prefix(prefix.to_owned());
            }
        }
        Self::General(pattern.to_owned())
    }

    /// Does `id` match? No allocation.
    #[inline]
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == id,
            Self::Prefix(p) => id.starts_with(p.as_str()),
            Self::General(p) => wildcard_match(p.as_bytes(), id.as_bytes()),
        }
    }
}

fn glob_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '*' | '?')
}

/// Iterative wildcard matching with a single backtrack point: on a mismatch after a `*`,
/// let that `*` swallow one more byte and retry. Linear in practice, O(n·m) worst case,
/// never recursive. Bytes suffice because globs are ASCII and so are valid RimNodeIds.
fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    star = Some((sp, si + 1));
                    p = sp + 1;
                    i = si + 1;
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::compile(p).map(|g| g.matches(s)).unwrap_or(false)
    }

    #[test]
    fn shapes() {
        assert_eq!(Glob::compile("*"), Ok(Glob::Any));
        assert_eq!(Glob::compile("rim:a:b:c"), Ok(Glob::Exact("rim:a:b:c".into())));
        assert_eq!(Glob::compile("rim:sensor:*"), Ok(Glob::Prefix("rim:sensor:".into())));
        assert!(matches!(Glob::compile("rim:*:x"), Ok(Glob::General(_))));
        assert!(Glob::compile("").is_err());
        assert!(Glob::compile("rim: x").is_err());
        assert!(Glob::compile("rim:é").is_err());
    }

    #[test]
    fn matching() {
        assert!(m("*", ""));
        assert!(m("*", "rim:a:b:c"));
        assert!(m("rim:sensor:*", "rim:sensor:plant:t1"));
        assert!(!m("rim:sensor:*", "rim:sensorx:plant:t1"));
        assert!(m("rim:*:plant:*", "rim:sensor:plant:t1"));
        assert!(!m("rim:*:plant:*", "rim:sensor:yard:t1"));
        assert!(m("rim:*:t?", "rim:sensor:plant:t1"));
        assert!(!m("rim:*:t?", "rim:sensor:plant:t12"));
        assert!(m("*:t1", "rim:sensor:plant:a:t1"));
        assert!(m("rim:?:*", "rim:a:b:c"));
        assert!(!m("rim:?:*", "rim:ab:b:c"));
        assert!(m("*a*b*c", "xxaxxbxxc"));
        assert!(!m("*a*b*c", "xxaxxbxxcx"));
        assert!(m("a**b", "ab"));
        assert!(!m("?", ""));
        assert!(m("rim:a:b:c", "rim:a:b:c"));
        assert!(!m("rim:a:b:c", "rim:a:b:cd"));
    }
}
