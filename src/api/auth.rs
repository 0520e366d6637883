//! Bearer tokens: the token file (`api.tokens_file`), its permission check, and the
//! constant-time lookup of a presented token.
//!
//! File format: one token per line, `<scope> <token>`, scope `read` (GET routes) or
//! `admin` (every route); blank lines and `#` comments are skipped. The file must not be
//! readable or writable by group or others (mode 0600 or stricter), like an SSH key.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed once and compared
//! with every stored digest without an early exit, so neither the token's length nor the
//! position of the first differing byte shows in the timing. Tokens never reach a log:
//! errors name the file and the line number only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Queries (GET).
    Read,
    /// Everything.
    Admin,
}

/// Why the token file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others have access.
    #[error("token file {path} has mode {mode:o}; it must be 0600 (no group or other access)")]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not `<scope> <token>`.
    #[error("token file {path} line {line}: expected `read <token>` or `admin <token>`")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// No token at all (authentication would refuse everyone).
    #[error("token file {path} holds no token")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The configured tokens.
#[derive(Debug)]
pub struct Tokens {
    digests: Vec<([u8; 32], Scope)>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header, or an unknown token.
    Unauthenticated,
    /// A known token without the scope.
    Forbidden,
}

/// The authenticated caller: its scope and a stable, non-secret id for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The token's scope.
    pub scope: Scope,
    /// First 8 bytes of the token's digest.
    pub id: u64,
}

impl Tokens {
    /// Loads and checks the token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let read_err = |source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, TokenFileError> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || TokenFileError::Line {
                path: path.to_owned(),
                line: i + 1,
            };
            let mut parts = line.split_whitespace();
            let scope = match parts.next() {
                Some("read") => Scope::Read,
                Some("admin") => Scope::Admin,
                _ => return Err(bad()),
            };
            let token = parts.next().ok_or_else(bad)?;
            if parts.next().is_some() {
                return Err(bad());
            }
            digests.push((digest(token.as_bytes()), scope));
        }
        if digests.is_empty() {
            return Err(TokenFileError::Empty { path: path.to_owned() });
        }
        Ok(Self { digests })
    }

    /// Checks an `Authorization` header value for `needed`.
    pub fn check(&self, authorization: Option<&[u8]>, needed: Scope) -> Result<Caller, Denied> {
        let token = authorization.and_then(bearer).ok_or(Denied::Unauthenticated)?;
        let presented = digest(token);
        let mut found: Option<Scope> = None;
        for (d, scope) in &self.digests {
            // Every digest is compared in full, whatever matched before.
            if ct_eq(d, &presented) {
                found = Some(found.map_or(*scope, |f| f.max(*scope)));
            }
        }
        let scope = found.ok_or(Denied::Unauthenticated)?;
        if scope < needed {
            return Err(Denied::Forbidden);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&presented[..8]);
        Ok(Caller {
            scope,
            id: u64::from_le_bytes(id),
        })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let scheme = v.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = v[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse("# ops\nread r-token\nadmin a-token\n\n", Path::new("t")).expect("parse")
    }

    #[test]
    fn scopes_are_enforced() {
        let t = tokens();
        assert_eq!(
            t.check(Some(b"Bearer r-token"), Scope::Read).map(|c| c.scope),
            Ok(Scope::Read)
        );
        assert_eq!(t.check(Some(b"Bearer r-token"), Scope::Admin), Err(Denied::Forbidden));
        assert_eq!(
            t.check(Some(b"bearer a-token"), Scope::Admin).map(|c| c.scope),
            Ok(Scope::Admin)
        );
        assert_eq!(t.check(Some(b"Bearer nope"), Scope::Read), Err(Denied::Unauthenticated));
        assert_eq!(t.check(Some(b"Basic abc"), Scope::Read), Err(Denied::Unauthenticated));
        assert_eq!(t.check(None, Scope::Read), Err(Denied::Unauthenticated));
    }

    #[test]
    fn bad_lines_name_the_line_not_the_token() {
        let e = Tokens::parse("read ok\nwrite secret-value\n", Path::new("t")).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("secret-value"), "{msg}");
        assert!(matches!(
            Tokens::parse("# none\n", Path::new("t")),
            Err(TokenFileError::Empty { .. })
        ));
    }

    #[test]
    fn a_group_readable_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("rimd-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("tokens");
        std::fs::write(&p, "read x\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            Tokens::load(&p),
            Err(TokenFileError::Mode { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(Tokens::load(&p).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
