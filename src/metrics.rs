//! Metrics for schedulers (issue 16): `--metrics-file PATH` writes, after each `sync` or
//! `ingest`, the last run's figures per cohort and destination, or per source, as OpenMetrics
//! text (which node_exporter's textfile collector reads; name the file `*.prom`), and
//! `--metrics-push URL` also sends them to a Prometheus Pushgateway.
//!
//! One file serves every scheduled command: a run replaces only the samples it produces, and
//! keeps the others from the file as it was (other cohorts, other sources, and the figures a
//! failed run could not produce: a failed sync sets `..._last_run_success 0` and leaves
//! `..._members` at the last run that computed it). The merge is done under a lock
//! (`PATH.lock`), and the file is replaced atomically (written beside it, then renamed), so a
//! collector never reads half a file and two runs finishing at once both land.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::debug;

use crate::error::{Error, Result};

/// Every family this tool writes: name, help. Samples of other names in an existing file
/// (an older version's, or hand-written) are not kept.
const FAMILIES: &[(&str, &str)] = &[
    (
        "cohort_bridge_sync_last_run_success",
        "1 if the cohort's last sync exited 0, else 0",
    ),
    (
        "cohort_bridge_sync_last_run_exit_code",
        "Exit code of the cohort's last sync (0 ok, 3 partial: dead letters, see README)",
    ),
    (
        "cohort_bridge_sync_last_run_timestamp_seconds",
        "When the cohort's last sync ended (Unix time)",
    ),
    (
        "cohort_bridge_sync_last_success_timestamp_seconds",
        "When a sync of the cohort last succeeded (committed or found nothing to change)",
    ),
    (
        "cohort_bridge_sync_duration_seconds",
        "Duration of the cohort's last sync",
    ),
    (
        "cohort_bridge_sync_members",
        "Members of the cohort after its last successful sync",
    ),
    (
        "cohort_bridge_sync_adds",
        "Ids added by the last successful sync",
    ),
    (
        "cohort_bridge_sync_removes",
        "Ids removed by the last successful sync",
    ),
    (
        "cohort_bridge_sync_removes_held_back",
        "Removals the last successful sync held back (removal guard)",
    ),
    (
        "cohort_bridge_sync_held_out",
        "Members the last successful sync held out (the cohort's holdout share)",
    ),
    (
        "cohort_bridge_sync_requests",
        "HTTP requests of the last successful sync, retries included",
    ),
    (
        "cohort_bridge_sync_retries",
        "Retried requests of the last successful sync",
    ),
    (
        "cohort_bridge_sync_dead_letters",
        "Ids the partner refused in the last successful sync",
    ),
    (
        "cohort_bridge_ingest_last_run_success",
        "1 if the source's last ingest exited 0, else 0",
    ),
    (
        "cohort_bridge_ingest_last_run_exit_code",
        "Exit code of the source's last ingest (3: records or files quarantined)",
    ),
    (
        "cohort_bridge_ingest_last_run_timestamp_seconds",
        "When the source's last ingest ended (Unix time)",
    ),
    (
        "cohort_bridge_ingest_last_success_timestamp_seconds",
        "When an ingest of the source last succeeded",
    ),
    (
        "cohort_bridge_ingest_duration_seconds",
        "Duration of the source's last ingest",
    ),
    (
        "cohort_bridge_ingest_files_read",
        "Files the last completed ingest read",
    ),
    (
        "cohort_bridge_ingest_records",
        "Records the last completed ingest read",
    ),
    (
        "cohort_bridge_ingest_events_added",
        "Events new to the table in the last completed ingest",
    ),
    (
        "cohort_bridge_ingest_duplicates",
        "Records the last completed ingest dropped as duplicates",
    ),
    (
        "cohort_bridge_ingest_quarantined",
        "Records (and whole broken files) the last completed ingest quarantined",
    ),
];

fn known(name: &str) -> bool {
    FAMILIES.iter().any(|(n, _)| *n == name)
}

/// Samples keyed by (family name, rendered label set `{k="v",...}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: BTreeMap<(String, String), f64>,
}

/// Where a command's metrics go (`--metrics-file`, `--metrics-push`).
#[derive(Debug, Clone, Default)]
pub struct MetricsOut {
    pub file: Option<PathBuf>,
    pub push: Option<reqwest::Url>,
}

impl MetricsOut {
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.push.is_none()
    }

    /// Usage problems before any work: the file's folder must exist, the file must not be
    /// the project file, a query (anything under `queries/`, or a cohort's SQL file) or an
    /// existing file this tool did not write ([`is_ours`]); the push URL must be http(s) and
    /// hold no credentials.
    pub fn check(&self, config: &crate::config::Config) -> Result<()> {
        if let Some(file) = &self.file {
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(Error::config(
                    None,
                    format!(
                        "--metrics-file {}: the folder {} does not exist",
                        file.display(),
                        dir.display()
                    ),
                ));
            }
            if file.is_dir() {
                return Err(Error::config(
                    None,
                    format!("--metrics-file {}: is a folder", file.display()),
                ));
            }
            if let Some(problem) = project_file_problem(file, config) {
                return Err(Error::config(
                    None,
                    format!("--metrics-file {}: {problem}", file.display()),
                ));
            }
            match std::fs::read(file) {
                Ok(bytes) if !is_ours(&String::from_utf8_lossy(&bytes)) => {
                    return Err(Error::config(
                        None,
                        format!(
                            "--metrics-file {}: the file exists and is not one this tool wrote \
                             (only `cohort_bridge_*` metrics, ending with `# EOF`); it is never \
                             replaced: name another file, or delete this one if it is yours",
                            file.display()
                        ),
                    ));
                }
                _ => {}
            }
        }
        if let Some(url) = &self.push
            && let Some(problem) = crate::config::url_secrets::problem(
                "--metrics-push",
                url.as_str(),
                "give the Pushgateway's credentials to a proxy in front of it (the push sends \
                 no credentials)",
            )
        {
            return Err(Error::config(None, problem));
        }
        if let Some(url) = &self.push
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(Error::config(
                None,
                format!(
                    "--metrics-push: `{}` is not an http(s) URL",
                    crate::config::url_secrets::shown(&crate::redact::scrubbed(url.as_str()))
                ),
            ));
        }
        Ok(())
    }

    /// Writes and pushes `metrics`; failures are logged, not returned: the run's own outcome
    /// stands (its exit code and the `runs` table still tell it).
    pub async fn emit(&self, group: &[(&str, &str)], metrics: Metrics) {
        if let Some(file) = self.file.clone() {
            let m = metrics.clone();
            let written = tokio::task::spawn_blocking(move || write_file(&file, &m)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot write the metrics file"),
                Err(e) => tracing::error!(error = %e, "cannot write the metrics file"),
            }
        }
        if let Some(url) = &self.push
            && let Err(e) = push(url, group, &metrics).await
        {
            tracing::error!(error = %crate::redact::scrubbed(e.to_string()), "cannot push the metrics");
        }
    }
}

/// Escapes a label value (OpenMetrics: backslash, double quote, newline).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
    out
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    /// Sets a sample of a known family.
    pub fn set(&mut self, name: &str, label_pairs: &[(&str, &str)], value: f64) {
        debug_assert!(known(name), "unknown metric family {name}");
        if value.is_finite() {
            self.samples
                .insert((name.to_string(), labels(label_pairs)), value);
        }
    }

    pub fn get(&self, name: &str, label_pairs: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .get(&(name.to_string(), labels(label_pairs)))
            .copied()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// `newer`'s samples replace this one's with the same name and labels; the rest stay.
    pub fn merge(&mut self, newer: Metrics) {
        self.samples.extend(newer.samples);
    }

    /// A sync's outcome for one cohort. `summary` is `None` when it failed.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_run(
        &mut self,
        cohort: &str,
        destination: &str,
        shard: Option<&str>,
        summary: Option<&crate::sync::SyncSummary>,
        exit_code: i32,
        ended: DateTime<Utc>,
        duration: Duration,
    ) {
        // Every sample of a family has the same label names: `shard` is "" when unsharded
        // (the same as no label to Prometheus).
        let l = [
            ("cohort", cohort),
            ("destination", destination),
            ("shard", shard.unwrap_or("")),
        ];
        let ok = exit_code == 0;
        self.set(
            "cohort_bridge_sync_last_run_success",
            &l,
            f64::from(u8::from(ok)),
        );
        self.set(
            "cohort_bridge_sync_last_run_exit_code",
            &l,
            f64::from(exit_code),
        );
        self.set(
            "cohort_bridge_sync_last_run_timestamp_seconds",
            &l,
            seconds(ended),
        );
        self.set(
            "cohort_bridge_sync_duration_seconds",
            &l,
            duration.as_secs_f64(),
        );
        let Some(s) = summary else { return };
        // A run with dead letters committed what the partner took: it is a success of the
        // sync, not of every id (exit 3, `..._dead_letters` says how many).
        self.set(
            "cohort_bridge_sync_last_success_timestamp_seconds",
            &l,
            seconds(ended),
        );
        for (name, v) in [
            ("cohort_bridge_sync_members", s.members),
            ("cohort_bridge_sync_adds", s.adds),
            ("cohort_bridge_sync_removes", s.removes),
            ("cohort_bridge_sync_removes_held_back", s.removes_held_back),
            ("cohort_bridge_sync_held_out", s.held_out),
            ("cohort_bridge_sync_requests", s.requests),
            ("cohort_bridge_sync_retries", s.retries),
            ("cohort_bridge_sync_dead_letters", s.dead_letters),
        ] {
            self.set(name, &l, v as f64);
        }
    }

    /// An ingest's outcome for one source. `summary` is `None` when it failed.
    pub fn ingest_run(
        &mut self,
        source: &str,
        summary: Option<&crate::ingest::IngestSummary>,
        exit_code: i32,
        ended: DateTime<Utc>,
        duration: Duration,
    ) {
        let l = [("source", source)];
        self.set(
            "cohort_bridge_ingest_last_run_success",
            &l,
            f64::from(u8::from(exit_code == 0)),
        );
        self.set(
            "cohort_bridge_ingest_last_run_exit_code",
            &l,
            f64::from(exit_code),
        );
        self.set(
            "cohort_bridge_ingest_last_run_timestamp_seconds",
            &l,
            seconds(ended),
        );
        self.set(
            "cohort_bridge_ingest_duration_seconds",
            &l,
            duration.as_secs_f64(),
        );
        let Some(s) = summary else { return };
        if exit_code == 0 {
            self.set(
                "cohort_bridge_ingest_last_success_timestamp_seconds",
                &l,
                seconds(ended),
            );
        }
        for (name, v) in [
            ("cohort_bridge_ingest_files_read", s.files_read),
            ("cohort_bridge_ingest_records", s.records_read),
            ("cohort_bridge_ingest_events_added", s.events_added),
            ("cohort_bridge_ingest_duplicates", s.duplicates),
            (
                "cohort_bridge_ingest_quarantined",
                s.quarantined_records + s.broken_files,
            ),
        ] {
            self.set(name, &l, v as f64);
        }
    }

    /// OpenMetrics text: each family's `# TYPE` and `# HELP`, then its samples, then `# EOF`.
    /// Also valid Prometheus text format 0.0.4 (gauges only; `# EOF` is a comment there).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut current = "";
        for ((name, labels), value) in &self.samples {
            if name != current {
                let help = FAMILIES
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("", |(_, h)| *h);
                let _ = writeln!(out, "# TYPE {name} gauge\n# HELP {name} {help}");
                current = name;
            }
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        out.push_str("# EOF\n");
        out
    }

    /// Reads back what `render` wrote: the samples of known families (those of an older
    /// version's `cohort_bridge_*` families are dropped). Anything else (another tool's
    /// metrics, a damaged or truncated file) is `None`: not a file of ours.
    pub fn parse(text: &str) -> Option<Metrics> {
        let mut m = Metrics::default();
        let mut ended = false;
        for line in text.lines() {
            if ended {
                return None;
            }
            if line == "# EOF" {
                ended = true;
                continue;
            }
            if let Some(d) = line
                .strip_prefix("# TYPE ")
                .or_else(|| line.strip_prefix("# HELP "))
            {
                // Descriptors of another tool's families: not our file.
                if !d.starts_with(PREFIX) {
                    return None;
                }
                continue;
            }
            let brace = line.find('{')?;
            let name = &line[..brace];
            if !name.starts_with(PREFIX) {
                return None;
            }
            let (pairs, rest) = parse_labels(&line[brace..])?;
            let value: f64 = rest.strip_prefix(' ')?.parse().ok()?;
            if !value.is_finite() {
                return None;
            }
            // Re-rendered, so a hand-edited order or spacing is the same series as ours.
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let labels = labels(&pairs);
            if known(name) {
                m.samples
                    .insert((name.to_string(), labels.to_string()), value);
            }
        }
        ended.then_some(m)
    }
}

/// A label set `{k="v",...}` at the start of `s`: its pairs, and the text after `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut rest = s.strip_prefix('{')?;
    let mut pairs = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((pairs, after));
        }
        if !pairs.is_empty() {
            rest = rest.strip_prefix(',')?;
        }
        let eq = rest.find('=')?;
        let key = &rest[..eq];
        let mut chars = key.chars();
        if !chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return None;
        }
        rest = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut it = rest.char_indices();
        let end = loop {
            match it.next()? {
                (i, '"') => break i,
                (_, '\\') => match it.next()?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    _ => return None,
                },
                (_, c) => value.push(c),
            }
        };
        pairs.push((key.to_string(), value));
        rest = &rest[end + 1..];
    }
}

/// Every family this tool writes starts with this.
const PREFIX: &str = "cohort_bridge_";

/// Whether `text` is a metrics file this tool wrote, so replacing it loses nothing: empty
/// (a placeholder made for us, e.g. by `touch`), or what [`Metrics::render`] writes: only
/// `# TYPE`/`# HELP` lines and samples of `cohort_bridge_*` families, ending with `# EOF`.
/// Recognised by its content rather than a header line: a comment line is not valid
/// OpenMetrics.
pub fn is_ours(text: &str) -> bool {
    text.is_empty() || Metrics::parse(text).is_some()
}

/// Why `file` must not be a metrics file of the project `config`: it is the project file,
/// lies under `queries/`, or is a cohort's SQL file. Compared after resolving symlinks and
/// relative paths.
fn project_file_problem(file: &Path, config: &crate::config::Config) -> Option<String> {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(real) = p.canonicalize() {
            return Some(real);
        }
        // Not there yet: its folder's real path and its name.
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    let target = resolve(file)?;
    if resolve(&config.file).is_some_and(|p| p == target) {
        return Some(format!(
            "is the project file {}: writing metrics there would destroy it",
            config.file.display()
        ));
    }
    if let Some(queries) = resolve(&config.base_dir().join("queries"))
        && target.starts_with(&queries)
    {
        return Some(format!(
            "lies under the project's queries folder {}: metrics would replace SQL",
            queries.display()
        ));
    }
    for name in config.cohorts.keys() {
        if let Ok(c) = config.cohort(name)
            && resolve(&c.sql_file).is_some_and(|p| p == target)
        {
            return Some(format!(
                "is the SQL file of cohort `{name}`: metrics would replace it"
            ));
        }
    }
    None
}

/// Merges `new` into the file at `path` under its lock and replaces it atomically.
pub fn write_file(path: &Path, new: &Metrics) -> Result<()> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Internal(format!("metrics file: {what} {}: {e}", p.display()))
    };
    let lock_path = sibling(path, ".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io("cannot open", &lock_path, e))?;
    lock.lock().map_err(|e| io("cannot lock", &lock_path, e))?;
    let mut all = match std::fs::read_to_string(path) {
        Ok(text) if text.is_empty() => Metrics::default(),
        // Refused before the run (`MetricsOut::check`); one that appeared since is left alone.
        Ok(text) => Metrics::parse(&text).ok_or_else(|| {
            Error::Internal(format!(
                "metrics file {}: not one this tool wrote (or damaged): not replaced",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Metrics::default(),
        Err(e) => return Err(io("cannot read", path, e)),
    };
    all.merge(new.clone());
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(all.render().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("cannot write", path, e));
    }
    debug!(file = %path.display(), samples = all.len(), "metrics written");
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    let mut name_dot = std::ffi::OsString::from(".");
    name_dot.push(name);
    path.with_file_name(name_dot)
}

/// POSTs the samples to a Pushgateway under `job/cohort_bridge` and the `group` labels
/// (base64url-encoded in the path, so any value is safe). POST replaces only the families
/// pushed, so a failed run's push keeps the group's last `members`.
pub async fn push(base: &reqwest::Url, group: &[(&str, &str)], metrics: &Metrics) -> Result<()> {
    use base64::Engine as _;
    let mut path = base.path().trim_end_matches('/').to_string();
    path.push_str("/metrics/job/cohort_bridge");
    for (k, v) in group {
        let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        // An empty value is `=` in base64 form (the Pushgateway's convention).
        let v = if v.is_empty() { "=".to_string() } else { v };
        let _ = write!(path, "/{k}@base64/{v}");
    }
    let mut url = base.clone();
    url.set_path(&path);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Internal(format!("metrics push client: {e}")))?;
    let body = metrics.render();
    let response = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| Error::Internal(format!("metrics push: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        return Err(Error::Internal(format!(
            "metrics push: the Pushgateway answered {status}: {text}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> crate::sync::SyncSummary {
        crate::sync::SyncSummary {
            cohort: "active".into(),
            members: 1234,
            adds: 34,
            removes: 5,
            requests: 3,
            ..Default::default()
        }
    }

    fn t() -> DateTime<Utc> {
        "2026-12-02T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn render_and_parse_round_trip_with_awkward_labels() {
        let mut m = Metrics::default();
        let odd = "we\"ird\\na\nme}{,=";
        m.sync_run(
            odd,
            "braze",
            Some("1/4"),
            Some(&summary()),
            0,
            t(),
            Duration::from_millis(1500),
        );
        m.ingest_run("currents", None, 2, t(), Duration::from_secs(3));
        let text = m.render();
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(Metrics::parse(&text), Some(m.clone()));
        let l = [("cohort", odd), ("destination", "braze"), ("shard", "1/4")];
        assert_eq!(m.get("cohort_bridge_sync_members", &l), Some(1234.0));
        assert_eq!(m.get("cohort_bridge_sync_duration_seconds", &l), Some(1.5));
        assert_eq!(
            m.get(
                "cohort_bridge_ingest_last_run_success",
                &[("source", "currents")]
            ),
            Some(0.0)
        );
        // A failed ingest has no figures and no success time.
        assert_eq!(
            m.get("cohort_bridge_ingest_records", &[("source", "currents")]),
            None
        );
    }

    #[test]
    fn a_failed_run_keeps_the_last_figures_and_other_cohorts() {
        let mut before = Metrics::default();
        before.sync_run("a", "braze", None, Some(&summary()), 0, t(), Duration::ZERO);
        before.sync_run("b", "braze", None, Some(&summary()), 0, t(), Duration::ZERO);
        let mut now = Metrics::default();
        let later = t() + chrono::Duration::hours(1);
        now.sync_run("a", "braze", None, None, 4, later, Duration::ZERO);
        before.merge(now);
        let a = [("cohort", "a"), ("destination", "braze"), ("shard", "")];
        assert_eq!(
            before.get("cohort_bridge_sync_last_run_success", &a),
            Some(0.0)
        );
        assert_eq!(
            before.get("cohort_bridge_sync_last_run_exit_code", &a),
            Some(4.0)
        );
        assert_eq!(before.get("cohort_bridge_sync_members", &a), Some(1234.0));
        assert_eq!(
            before.get("cohort_bridge_sync_last_success_timestamp_seconds", &a),
            Some(seconds(t()))
        );
        assert_eq!(
            before.get("cohort_bridge_sync_last_run_timestamp_seconds", &a),
            Some(seconds(later))
        );
        let b = [("cohort", "b"), ("destination", "braze"), ("shard", "")];
        assert_eq!(
            before.get("cohort_bridge_sync_last_run_success", &b),
            Some(1.0)
        );
    }

    #[test]
    fn foreign_or_damaged_files_are_not_taken_as_ours() {
        let mut m = Metrics::default();
        m.sync_run("a", "braze", None, Some(&summary()), 0, t(), Duration::ZERO);
        let text = m.render();
        // Truncated (no EOF), a line after EOF, a line without labels, a bad value.
        assert_eq!(Metrics::parse(&text[..text.len() - 6]), None);
        assert_eq!(Metrics::parse(&format!("{text}x{{}} 1\n")), None);
        assert_eq!(Metrics::parse("up 1\n# EOF\n"), None);
        assert_eq!(Metrics::parse("x{a=\"1\"} one\n# EOF\n"), None);
        assert_eq!(Metrics::parse("x{a=\"1\"} NaN\n# EOF\n"), None);
        // Another tool's samples or descriptors: not ours.
        assert_eq!(Metrics::parse(&format!("other{{a=\"1\"}} 2\n{text}")), None);
        assert_eq!(Metrics::parse(&format!("# TYPE up gauge\n{text}")), None);
        // An older version's family of ours is dropped, the rest kept.
        let kept = Metrics::parse(&format!("cohort_bridge_gone{{a=\"1\"}} 2\n{text}")).unwrap();
        assert_eq!(kept, m);
        assert!(is_ours("") && is_ours(&text) && !is_ours("up 1\n"));
    }

    #[test]
    fn the_file_is_merged_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cohort-bridge.prom");
        let mut a = Metrics::default();
        a.sync_run("a", "braze", None, Some(&summary()), 0, t(), Duration::ZERO);
        write_file(&path, &a).unwrap();
        let mut b = Metrics::default();
        b.ingest_run("currents", None, 1, t(), Duration::ZERO);
        write_file(&path, &b).unwrap();
        let back = Metrics::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        a.merge(b);
        assert_eq!(back, a);
        // Only the file and its lock are left (no staging file).
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".cohort-bridge.prom.lock", "cohort-bridge.prom"]);
        // A file that is not ours is never replaced; an empty one is.
        std::fs::write(&path, "not metrics").unwrap();
        assert!(write_file(&path, &a).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not metrics");
        std::fs::write(&path, "").unwrap();
        write_file(&path, &a).unwrap();
        assert_eq!(
            Metrics::parse(&std::fs::read_to_string(&path).unwrap()),
            Some(a)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The reader of a file anyone can edit never panics, and whatever it accepts renders
        /// back to something it reads the same.
        #[test]
        fn parse_never_panics(text in "(# EOF\n|# TYPE x gauge\n|cohort_bridge_sync_members|\\{|\\}|\"|\\\\|=|,|[a-z]|[ 0-9.e+-]|\n){0,80}") {
            if let Some(m) = Metrics::parse(&text) {
                proptest::prop_assert_eq!(Metrics::parse(&m.render()), Some(m));
            }
        }

        #[test]
        fn any_label_value_round_trips(v in "\\PC{0,20}", w in "[\"\\\\\n{}=,]{0,6}") {
            let mut m = Metrics::default();
            let value = format!("{v}{w}");
            m.sync_run(&value, &w, None, Some(&summary()), 0, t(), Duration::ZERO);
            proptest::prop_assert_eq!(Metrics::parse(&m.render()), Some(m));
        }
    }
}
