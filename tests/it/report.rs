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

/// Every `<rect class="bar" …>` (or timeline `<circle class="point" …>`, keyed by its
/// `data-time` in seconds) of a chart: (data-x, data-series) → data-value.
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
    let bars = dom[start..end]
        .split("<rect ")
        .skip(1)
        .filter(|t| t.starts_with("class=\"bar\""))
        .map(|t| {
            (
                (attr(t, "data-x"), attr(t, "data-series")),
                attr(t, "data-value").parse().unwrap(),
            )
        });
    let points = dom[start..end]
        .split("<circle ")
        .skip(1)
        .filter(|t| t.starts_with("class=\"point\""))
        .map(|t| {
            (
                (attr(t, "data-time"), attr(t, "data-series")),
                attr(t, "data-value").parse().unwrap(),
            )
        });
    bars.chain(points).collect()
}

/// `at` in seconds since the epoch, as timeline points carry it.
fn epoch(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
        .to_string()
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
    // A campaign we name ourselves, pointing at a feature of our choosing with a window of our
    // choosing: the funnel must count it from the project file, not from anything built in.
    let campaign = sent_campaigns(dir)
        .into_iter()
        .next()
        .expect("the export sent a campaign");
    let campaign = campaign.as_str();
    let (feature, window_hours) = ("dark_mode", 36);
    let toml = std::fs::read_to_string(dir.join("cohort-bridge.toml")).unwrap()
        + &format!(
            "\n[campaigns.{campaign}]\ncohort = \"active\"\nfeature = \"{feature}\"\nwindow = \"{window_hours}h\"\n"
        );
    std::fs::write(dir.join("cohort-bridge.toml"), toml).unwrap();

    let html = dir.join("out/report.html");
    // An object-store URL, as a lake's (`file://` here: the same code path as s3://).
    let out_url = format!("file://{}", html.display());
    let run = project.run(&["report", "--out", &out_url]);
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

    assert!(
        dom.contains("data-wide=\"0\""),
        "the page is wider than the window: a table or chart overflows"
    );

    // Cohort sizes and changes: the summaries of the two syncs, run by run, each placed at its
    // time.
    let sizes = bars(&dom, "sizes-0");
    for (s, at) in summaries.iter().zip([T1, T2]) {
        for key in ["members", "adds", "removes"] {
            assert_eq!(
                sizes[&(epoch(at), key.to_string())],
                s[key].as_f64().unwrap(),
                "{at} {key}"
            );
        }
    }
    let delivery = bars(&dom, "delivery-0");
    assert_eq!(
        delivery[&(epoch(T2), "requests".to_string())],
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
    // Our campaign's feature uses within its window, computed from the Parquet files.
    let used = used_within(dir, campaign, feature, window_hours);
    assert!(
        used > 0.0,
        "the world has uses of {feature} after {campaign}"
    );
    assert_eq!(
        funnel[&(campaign.to_string(), "used_feature".to_string())],
        used
    );

    // `--since`: only what happened from then on (the second sync's run).
    let since = dir.join("out/since.html");
    let run = project.run(&["report", "--out", since.to_str().unwrap(), "--since", T2]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let (dom2, _) = headless(&format!("file://{}", since.display()), &["--dump-dom"]);
    let sizes = bars(&dom2, "sizes-0");
    assert!(
        sizes.keys().all(|(t, _)| *t == epoch(T2)) && !sizes.is_empty(),
        "{sizes:?}"
    );
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

/// The campaign ids of the ingested sends, sorted.
fn sent_campaigns(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for day in std::fs::read_dir(dir.join("lake/partner_events"))
        .unwrap()
        .flatten()
    {
        for f in std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for b in read_all(&f.path()) {
                for i in 0..b.num_rows() {
                    if string_at(&b, "event_type", i).is_some_and(|t| t.ends_with(".Send"))
                        && let Some(c) = string_at(&b, "campaign_id", i)
                    {
                        out.insert(c);
                    }
                }
            }
        }
    }
    out
}

/// Members sent `campaign` (push or email) who used `feature` within `hours` of their first
/// send, from the lake's Parquet files read with the parquet crate.
fn used_within(dir: &Path, campaign: &str, feature: &str, hours: i64) -> f64 {
    use datafusion::arrow::array::{Array, TimestampMicrosecondArray};
    let micros = |b: &datafusion::arrow::array::RecordBatch, col: &str, i: usize| -> i64 {
        let c = b.column_by_name(col).unwrap();
        let c = datafusion::arrow::compute::cast(
            c,
            &datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                None,
            ),
        )
        .unwrap();
        let c = c
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        c.value(i)
    };
    let files = |root: PathBuf| {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.push(p);
                }
            }
        }
        out
    };
    let mut sent: BTreeMap<String, i64> = BTreeMap::new();
    for f in files(dir.join("lake/partner_events")) {
        for b in read_all(&f) {
            for i in 0..b.num_rows() {
                let ty = string_at(&b, "event_type", i).unwrap_or_default();
                let (Some(user), Some(c)) = (
                    string_at(&b, "external_user_id", i),
                    string_at(&b, "campaign_id", i),
                ) else {
                    continue;
                };
                if c == campaign
                    && (ty == "users.messages.pushnotification.Send"
                        || ty == "users.messages.email.Send")
                {
                    let t = micros(&b, "event_time", i);
                    let e = sent.entry(user).or_insert(t);
                    *e = (*e).min(t);
                }
            }
        }
    }
    let window = hours * 3600 * 1_000_000;
    let mut users = std::collections::BTreeSet::new();
    for f in files(dir.join("lake/events")) {
        for b in read_all(&f) {
            for i in 0..b.num_rows() {
                if string_at(&b, "event_name", i).as_deref() != Some("feature_used")
                    || string_at(&b, "feature", i).as_deref() != Some(feature)
                {
                    continue;
                }
                let Some(user) = string_at(&b, "user_id", i) else {
                    continue;
                };
                if let Some(&at) = sent.get(&user) {
                    let t = micros(&b, "event_time", i);
                    if t >= at && t < at + window {
                        users.insert(user);
                    }
                }
            }
        }
    }
    users.len() as f64
}
