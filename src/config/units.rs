//! Durations, sizes and rates as the project file writes them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `"1.5 GiB"` → `(1.5, "GiB")`: a leading number and the trimmed rest.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// The range of `requests_per_second` (and `--requests-per-second`): below it a single
/// request's wait would be measured in hours, above it no partner answers.
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.01..=100_000.0;

/// Checks a request rate against `RATE_RANGE`.
pub fn check_rate(rate: f64) -> std::result::Result<(), String> {
    if rate.is_finite() && RATE_RANGE.contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "must be between {} and {} requests per second, got {rate}",
            RATE_RANGE.start(),
            RATE_RANGE.end()
        ))
    }
}

/// Pushes a problem naming `key` and the allowed range when `value` is outside `range`.
pub(super) fn within(
    out: &mut Vec<String>,
    key: &str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) {
    if !range.contains(&value) {
        out.push(format!(
            "{key}: must be between {} and {}, got {}",
            human_duration(*range.start()),
            human_duration(*range.end()),
            human_duration(value)
        ));
    }
}

/// `1500ms` → `1.5s`, `7200s` → `2h`: a duration as the project file would write it.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60.0 || secs % 60.0 != 0.0 {
        format!("{secs}s")
    } else if secs < 3600.0 || secs % 3600.0 != 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{}h", secs / 3600.0)
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a duration (use e.g. 250ms, 30s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"))
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        Raw::Seconds(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
    }
}

/// A byte size: a number of bytes, or text like `512MiB`, `1.5GiB`, `800MB`, `64KiB`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("`{text}` is not a size (try `512MiB` or `2GiB`)"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = number * scale as f64;
    if bytes < 1.0 || !bytes.is_finite() {
        return Err(format!("`{text}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

pub(super) fn de_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Bytes(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        Raw::Bytes(b) => Ok(b),
    }
}
