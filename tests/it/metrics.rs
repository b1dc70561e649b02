//! `--metrics-file` and `--metrics-push` (issue 16): OpenMetrics after each sync and ingest, read
//! back with an independent OpenMetrics parser (the `openmetrics-parser` crate), and a
//! Pushgateway stand-in on loopback that records what it was sent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d};
use crate::ingest::{Lakeside, OPEN, T0};
use crate::support::*;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn parse(path: &Path) -> Exposition {
    let text = std::fs::read_to_string(path).unwrap();
    parse_openmetrics(&text).unwrap_or_else(|e| panic!("not OpenMetrics ({e:?}):\n{text}"))
}

/// The value of `family` for the sample whose labels include every pair of `labels`.
fn value(m: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let fam = m.families.get(family)?;
    fam.iter_samples()
        .find(|s| {
            let set: HashMap<String, String> = s
                .get_labelset()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels
                .iter()
                .all(|(k, v)| set.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| match &s.value {
            OpenMetricsValue::Gauge(n) => n.as_f64(),
            other => panic!("{family} is not a gauge: {other:?}"),
        })
}

#[test]
fn a_sync_writes_openmetrics_and_a_failed_one_keeps_the_last_figures() {
    let partner = Partner::plain();
    // Few, short retries: the partner goes away below.
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 500\nrequests_per_second = 5000\n[destinations.braze.retry]\n\
         max_attempts = 2\ninitial_backoff = \"5ms\"\nmax_backoff = \"10ms\"\nmax_elapsed = \"2s\"",
        &[
            ("active", ACTIVE_7D),
            ("broken", "SELECT no_such_column FROM users"),
        ],
    );
    let file = project.dir.path().join("metrics/cohort-bridge.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let flag = ["--metrics-file", file.to_str().unwrap()];

    let run = project.run(&[&["sync", "active", "--at", T1][..], &flag].concat());
    let summary = run.summary();
    let m = parse(&file);
    let active = [
        ("cohort", "active"),
        ("destination", "braze"),
        ("shard", ""),
    ];
    assert_eq!(
        value(&m, "cohort_bridge_sync_members", &active),
        Some(active_7d(T1).len() as f64)
    );
    for (family, key) in [
        ("cohort_bridge_sync_adds", "adds"),
        ("cohort_bridge_sync_removes", "removes"),
        ("cohort_bridge_sync_requests", "requests"),
        ("cohort_bridge_sync_dead_letters", "dead_letters"),
    ] {
        assert_eq!(
            value(&m, family, &active),
            summary[key].as_f64(),
            "{family}"
        );
    }
    assert_eq!(
        value(&m, "cohort_bridge_sync_last_run_success", &active),
        Some(1.0)
    );
    let succeeded = value(
        &m,
        "cohort_bridge_sync_last_success_timestamp_seconds",
        &active,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now).contains(&succeeded),
        "{succeeded} vs {now}"
    );
    assert!(value(&m, "cohort_bridge_sync_duration_seconds", &active).unwrap() > 0.0);

    // A failing cohort beside it: its success is 0 with its exit code, and `active` (not run
    // this time) keeps its samples.
    let run = project.run(&[&["sync", "broken", "--at", T2][..], &flag].concat());
    assert_ne!(run.code(), 0);
    let m = parse(&file);
    let broken = [
        ("cohort", "broken"),
        ("destination", "braze"),
        ("shard", ""),
    ];
    assert_eq!(
        value(&m, "cohort_bridge_sync_last_run_success", &broken),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "cohort_bridge_sync_last_run_exit_code", &broken),
        Some(f64::from(run.code()))
    );
    assert_eq!(value(&m, "cohort_bridge_sync_members", &broken), None);
    assert_eq!(
        value(&m, "cohort_bridge_sync_members", &active),
        Some(active_7d(T1).len() as f64)
    );

    // `active` failing (the partner is gone) keeps its last figures and success time.
    drop(partner);
    let run = project.run(&[&["sync", "active", "--at", T2][..], &flag].concat());
    assert_ne!(run.code(), 0, "{}", run.stderr());
    let m = parse(&file);
    assert_eq!(
        value(&m, "cohort_bridge_sync_last_run_success", &active),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "cohort_bridge_sync_members", &active),
        Some(active_7d(T1).len() as f64)
    );
    assert_eq!(
        value(
            &m,
            "cohort_bridge_sync_last_success_timestamp_seconds",
            &active
        ),
        Some(succeeded)
    );

    // A dry run writes nothing.
    let before = std::fs::read(&file).unwrap();
    let run = project.run(&[&["sync", "active", "--dry-run", "--at", T2][..], &flag].concat());
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn an_ingest_reports_records_duplicates_and_quarantine() {
    let l = Lakeside::new();
    let dir = l.currents(OPEN, "2026-11-27-10", "x");
    let event = |id: &str| {
        serde_json::json!({"event_type": OPEN, "id": id, "time": T0, "external_user_id": format!("u-{id}")})
            .to_string()
    };
    // Two events, one of them twice, and a line that is not JSON.
    let text = format!(
        "{}\n{}\n{}\n{{not json\n",
        event("e1"),
        event("e2"),
        event("e1")
    );
    std::fs::write(dir.with_file_name("a.ndjson"), text).unwrap();
    let file = l.dir.path().join("ingest.prom");
    let run = l.ingest(&["--metrics-file", file.to_str().unwrap()]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let summary = run.summary_any();
    let m = parse(&file);
    let s = [("source", "currents")];
    for (family, key) in [
        ("cohort_bridge_ingest_records", "records_read"),
        ("cohort_bridge_ingest_events_added", "events_added"),
        ("cohort_bridge_ingest_duplicates", "duplicates"),
    ] {
        assert_eq!(value(&m, family, &s), summary[key].as_f64(), "{family}");
    }
    assert_eq!(
        value(&m, "cohort_bridge_ingest_events_added", &s),
        Some(2.0)
    );
    assert_eq!(value(&m, "cohort_bridge_ingest_quarantined", &s), Some(1.0));
    assert_eq!(
        value(&m, "cohort_bridge_ingest_last_run_exit_code", &s),
        Some(3.0)
    );
    assert_eq!(
        value(&m, "cohort_bridge_ingest_last_run_success", &s),
        Some(0.0)
    );
}

#[test]
fn metrics_are_pushed_to_a_pushgateway_and_bad_flags_are_refused_first() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/base/", listener.local_addr().unwrap());
    // The stand-in: one request, recorded, answered 200.
    let gateway = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let len: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        (line, headers, String::from_utf8(body).unwrap())
    });
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 500\nrequests_per_second = 5000",
        &[("active", ACTIVE_7D)],
    );
    let run = project.run(&["sync", "active", "--at", T1, "--metrics-push", &url]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let (line, headers, body) = gateway.join().unwrap();
    // Base64url grouping values: "active" and "braze"; the empty shard is "=".
    assert_eq!(
        line.trim_end(),
        "POST /base/metrics/job/cohort_bridge/cohort@base64/YWN0aXZl/destination@base64/YnJhemU/shard@base64/= HTTP/1.1"
    );
    assert!(
        headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    let m = parse_openmetrics(&body).unwrap();
    assert_eq!(
        value(&m, "cohort_bridge_sync_members", &[("cohort", "active")]),
        Some(active_7d(T1).len() as f64)
    );

    // Flags are checked before any work.
    let run = project.run(&["sync", "active", "--metrics-file", "no/such/dir/m.prom"]);
    assert_eq!(run.code(), 2);
    assert!(run.stderr().contains("no/such/dir"), "{}", run.stderr());
    let run = project.run(&["sync", "active", "--metrics-push", "ftp://x/"]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("not an http(s) URL"),
        "{}",
        run.stderr()
    );
}
