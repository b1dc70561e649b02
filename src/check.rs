//! `check`: validate the project file and plan every cohort's SQL against the real table
//! schemas without running anything. Lists every problem found, not only the first (the
//! command that prints them is `cli::check`).

use chrono::{DateTime, Utc};

use crate::cohort;
use crate::config::{Config, env_lookup};
use crate::lake::sql::Params;
use crate::lake::{Lake, Location};

/// What `check` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub tables: usize,
    pub cohorts: usize,
    pub cohorts_planned: usize,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Runs every check; the report lists problems (exit 2) and warnings (exit 0). `only` limits the
/// cohorts planned (empty: every cohort); a name the project does not define is a problem.
pub async fn check_project(config: &Config, at: DateTime<Utc>, only: &[String]) -> CheckReport {
    let file = config.file.display().to_string();
    let mut report = CheckReport {
        tables: config.tables.len(),
        cohorts: config.cohorts.len(),
        problems: config
            .problems()
            .into_iter()
            .map(|p| format!("{file}: {p}"))
            .collect(),
        ..CheckReport::default()
    };
    // The conflicts `sync` refuses too (one function, so the two cannot drift).
    report.problems.extend(
        config
            .conflicts(&env_lookup)
            .into_iter()
            .map(|p| format!("{file}: {p}")),
    );
    // A URL with credentials in it: nothing is opened with it (a store or a client could
    // quote it), and nothing more is said.
    if !config.url_secrets().is_empty() {
        return report;
    }
    for name in only {
        if !config.cohorts.contains_key(name) {
            report.problems.push(format!(
                "{file}: no cohort `{name}` (the file defines: {})",
                config
                    .cohorts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (name, d) in &config.destinations {
        if let Some(host) = d.kind.base_url().and_then(plain_http_host) {
            report.warnings.push(format!(
                "{file}: destinations.{name}.base_url: `http://` to {host}, which is not this \
                 machine: the keys would cross the network unencrypted, and a partner that \
                 redirects to https:// makes every sync fail (redirects are never followed); \
                 use https://"
            ));
        }
        if let Err(e) = config.credentials(name, &env_lookup) {
            report
                .warnings
                .push(format!("{e} (needed by `sync`, not by `check`)"));
        }
    }
    let location = match Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)
    {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(format!("{file}: lake.url: {e}"));
            return report;
        }
    };
    let state = match crate::state::area(config, &location) {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let lake = match Lake::new(location, state, config) {
        Ok(lake) => lake,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    for (name, table) in &config.tables {
        if let Err(e) = lake.register(name, table).await {
            report.problems.push(e.to_string());
        }
    }
    if let Err(e) = crate::state::tables::register_tables(&lake, config) {
        report.problems.push(e.to_string());
    }
    let params = Params::at(at);
    for name in config
        .cohorts
        .keys()
        .filter(|n| only.is_empty() || only.contains(n))
    {
        // A cohort whose configuration is wrong was reported by `problems` already.
        let Ok(c) = config.cohort(name) else { continue };
        match cohort::plan(&lake, &c, &params).await {
            Ok(_) => report.cohorts_planned += 1,
            Err(e) => report.problems.push(format!("cohort `{name}`: {e}")),
        }
    }
    report
}

/// The host of a plain-`http://` URL that is not loopback (`localhost`, 127.0.0.0/8, ::1).
fn plain_http_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if u.scheme() != "http" {
        return None;
    }
    let loopback = match u.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (!loopback).then(|| u.host_str().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::plain_http_host;

    #[test]
    fn plain_http_is_flagged_unless_loopback() {
        assert_eq!(
            plain_http_host("http://rest.iad-01.braze.com"),
            Some("rest.iad-01.braze.com".into())
        );
        assert_eq!(
            plain_http_host("http://10.0.0.7:8080/"),
            Some("10.0.0.7".into())
        );
        for ok in [
            "https://rest.iad-01.braze.com",
            "http://127.0.0.1:9",
            "http://localhost:1",
            "http://[::1]:5",
        ] {
            assert_eq!(plain_http_host(ok), None, "{ok}");
        }
    }
}
