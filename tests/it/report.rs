//! `report`: the HTML file, loaded in a real headless Chromium (Debian's package; `.ci/run`
//! installs it): the page's own script runs without an error, nothing is fetched, the charts
//! carry the numbers of the lake — checked against the sync summaries and the ingested Parquet
//! files read with the parquet crate, not through the report's SQL — and a screenshot is
//! written (`target/tmp/report.png`; the README's is `docs/report.png`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::incremental::{ACTIVE_7D, T1, T2};
use crate::support::*;

fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("the report test needs Chromium: `apt-get install chromium` (.ci/run installs it)");
}

/// Runs headless Chromium on `url` with `extra` (e.g. `--dump-dom`); returns (stdout, stderr).
fn headless(url: &str, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every `<rect class="bar" …>` of a chart: (data-x, data-series) → data-value.
fn bars(dom: &str, chart: &str) -> BTreeMap<(String, String), f64> {
    let start = dom
        .find(&format!("id=\"{chart}\""))
        .unwrap_or_else(|| panic!("no chart {chart}"));
    let end = start + dom[start..].find("</svg>").unwrap();
    let attr = |tag: &str, name: &str| -> String {
        let k = format!("{name}=\"");
        let i = tag.find(&k).unwrap() + k.len();
        tag[i..i + tag[i..].find('"').unwrap()]
            .replace("&amp;", "&")
            .to_string()
    };
    dom[start..end]
        .split("<rect ")
        .skip(1)
        .filter(|t| t.starts_with("class=\"bar\""))
        .map(|t| {
            (
                (attr(t, "data-x"), attr(t, "data-series")),
                attr(t, "data-value").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_report_loads_in_a_browser_and_shows_the_lakes_numbers() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 500\nrequests_per_second = 5000",
        &[("active", ACTIVE_7D)],
    );
    let dir = project.dir.path();
    project.own_lake_with_source();
    let summaries: Vec<serde_json::Value> = [T1, T2]
        .iter()
        .map(|at| project.run(&["sync", "active", "--at", at]).summary())
        .collect();
    project.export_and_ingest(2000, "2026-11-24T10:00:00Z");

    let html = dir.join("out/report.html");
    let run = project.run(&["report", "--out", html.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let text = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to fetch at view time.
    for needle in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!text.contains(needle), "the page refers to {needle}");
    }

    let url = format!("file://{}", html.display());
    let (dom, log) = headless(&url, &["--dump-dom"]);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run: {log}"
    );
    assert!(!dom.contains("data-errors="), "script errors: {dom}");
    for bad in ["Uncaught", "ERR_FILE_NOT_FOUND", "Failed to load resource"] {
        assert!(!log.contains(bad), "console: {log}");
    }
    assert!(
        dom.contains("6 sections"),
        "{}",
        &dom[..dom.len().min(2000)]
    );

    // Cohort sizes and changes: the summaries of the two syncs, run by run.
    let sizes = bars(&dom, "sizes-0");
    for (s, at) in summaries
        .iter()
        .zip(["2026-11-26 12:00", "2026-11-27 12:00"])
    {
        for key in ["members", "adds", "removes"] {
            assert_eq!(
                sizes[&(at.to_string(), key.to_string())],
                s[key].as_f64().unwrap(),
                "{at} {key}"
            );
        }
    }
    let delivery = bars(&dom, "delivery-0");
    assert_eq!(
        delivery[&("2026-11-27 12:00".to_string(), "requests".to_string())],
        summaries[1]["requests"].as_f64().unwrap()
    );

    // Ingest volume by day and type: the partner_events files themselves.
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    let events = dir.join("lake/partner_events");
    for day in std::fs::read_dir(&events).unwrap().flatten() {
        let name = day.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix("event_date=") else {
            continue;
        };
        for f in std::fs::read_dir(day.path()).unwrap().flatten() {
            for b in read_all(&f.path()) {
                for i in 0..b.num_rows() {
                    let ty = string_at(&b, "event_type", i).unwrap();
                    *want.entry((date.to_string(), ty)).or_default() += 1.0;
                }
            }
        }
    }
    assert!(want.len() > 3, "{want:?}");
    assert_eq!(bars(&dom, "ingest-0"), want);
    // The funnel's sends are the push and email sends ingested.
    let funnel = bars(&dom, "funnel-0");
    let sends: f64 = want
        .iter()
        .filter(|((_, ty), _)| ty.ends_with(".Send"))
        .map(|(_, n)| n)
        .sum();
    let funnel_sends: f64 = funnel
        .iter()
        .filter(|((_, s), _)| s == "sent")
        .map(|(_, n)| n)
        .sum();
    // (Sends are counted per member and campaign: the same, as each member gets one of each.)
    assert_eq!(funnel_sends, sends);
    // Every table can be taken away as CSV.
    assert_eq!(
        text.matches("download=\"").count(),
        5,
        "one per section with rows"
    );

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::remove_file(&png);
    headless(
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,2600",
            "--hide-scrollbars",
        ],
    );
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "screenshot"
    );
}
