//! The one string hash the rules and the daemon agree on.

/// 64-bit FNV-1a of the UTF-8 bytes of `s` (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`).
///
/// Stable across builds, platforms and versions: the daemon hashes metric names and statuses
/// with it once per event, and compiled rules compare those hashes, so changing it would
/// silently break every rule. A collision between two distinct names would make them
/// indistinguishable to rules; with 64 bits and at most a few hundred names in play, that is
/// accepted.
pub const fn name_hash(s: &str) -> u64 {
    name_hash_bytes(s.as_bytes())
}

/// [`name_hash`] of a name's bytes, for a reader that has them without a `&str` (the
/// journal's records, whose names were validated when they were written).
pub const fn name_hash_bytes(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(PRIME);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::name_hash;

    #[test]
    fn matches_published_fnv1a_vectors() {
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(name_hash("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(super::name_hash_bytes(b"foobar"), name_hash("foobar"));
    }
}
