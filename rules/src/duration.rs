//! Durations as rule files spell them: an integer and a unit, `500ms`, `5s`, `2m`, `1h`.
//! Shared by the expression lexer (windows, `stale`) and the `cooldown` key.

/// Parses `digits` + unit into milliseconds. `Err` carries a message for the user.
pub(crate) fn parse_duration(digits: &str, unit: &str) -> Result<u64, String> {
    let per = unit_ms(unit).ok_or_else(|| format!("unknown duration unit '{unit}'; use ms, s, m or h"))?;
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("duration '{digits}{unit}' is too large"))?;
    n.checked_mul(per)
        .ok_or_else(|| format!("duration '{digits}{unit}' is too large"))
}

/// Parses a whole duration string such as `10s` (the `cooldown` key).
pub(crate) fn parse_duration_str(s: &str) -> Result<u64, String> {
    let split = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() || unit.is_empty() {
        return Err(format!("expected a duration like 10s or 500ms, found '{s}'"));
    }
    parse_duration(digits, unit)
}

fn unit_ms(unit: &str) -> Option<u64> {
    match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    }
}

/// The canonical spelling: the largest unit that divides `ms` exactly (`5000` → `5s`).
pub(crate) fn format_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (per, unit) in UNITS {
        if ms != 0 && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    if ms == 0 {
        return "0s".to_owned();
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration_str("500ms"), Ok(500));
        assert_eq!(parse_duration_str("5s"), Ok(5_000));
        assert_eq!(parse_duration_str("2m"), Ok(120_000));
        assert_eq!(parse_duration_str("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_str("0s"), Ok(0));
        assert!(parse_duration_str("5").is_err());
        assert!(parse_duration_str("s").is_err());
        assert!(parse_duration_str("5d").is_err());
        assert!(parse_duration_str("99999999999999999999s").is_err());
        assert!(parse_duration_str("18446744073709551615h").is_err());
        assert_eq!(format_duration(5_000), "5s");
        assert_eq!(format_duration(1_500), "1500ms");
        assert_eq!(format_duration(7_200_000), "2h");
        assert_eq!(format_duration(0), "0s");
    }
}
