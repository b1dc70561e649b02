//! Flags several commands share: `--at`, the metrics outputs, and the parsers of times and
//! durations.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::Args;

/// Where a run's metrics go (OpenMetrics; see README "Metrics for schedulers").
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// After each cohort or source, merge its figures into this OpenMetrics file (replaced
    /// atomically; for node_exporter's textfile collector name it `*.prom`).
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// Also POST them to this Prometheus Pushgateway (e.g. http://pushgateway:9091), grouped
    /// by job `cohort_bridge` and the cohort and destination, or the source.
    #[arg(long, value_name = "URL")]
    metrics_push: Option<reqwest::Url>,
}

impl From<MetricsArgs> for crate::metrics::MetricsOut {
    fn from(a: MetricsArgs) -> Self {
        crate::metrics::MetricsOut {
            file: a.metrics_file,
            push: a.metrics_push,
        }
    }
}

#[derive(Args, Debug)]
pub struct AtArg {
    /// The run's logical time, UTC (binds $run_ts and $run_date): RFC 3339, `YYYY-MM-DD HH:MM:SS+00:00`
    /// (Airflow's `{{ data_interval_end }}`) or `YYYY-MM-DD`. Default: now.
    #[arg(long, value_parser = parse_at)]
    pub at: Option<DateTime<Utc>>,
}

/// Parses a duration flag (`1h`, `2s`), as the project file does.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

/// Parses `--at`: RFC 3339 (`2026-11-28T10:00:00Z`), Airflow's `2026-11-28 10:00:00+00:00`,
/// a naive `2026-11-28T10:00:00` (taken as UTC) or a date `2026-11-28` (midnight UTC).
pub fn parse_at(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{s}` is not a time: use RFC 3339 (2026-11-28T10:00:00Z), `2026-11-28 10:00:00+00:00` or 2026-11-28"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_what_schedulers_pass() {
        let want: DateTime<Utc> = "2026-11-28T10:00:00Z".parse().unwrap();
        for s in [
            "2026-11-28T10:00:00Z",
            "2026-11-28T10:00:00+00:00",
            "2026-11-28 10:00:00+00:00",
            "2026-11-28T11:00:00+01:00",
            "2026-11-28T10:00:00",
        ] {
            assert_eq!(parse_at(s).unwrap(), want, "{s}");
        }
        assert_eq!(
            parse_at("2026-11-28").unwrap(),
            "2026-11-28T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(parse_at("yesterday").is_err());
    }
}
