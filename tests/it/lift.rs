//! A world with a known effect: sync two cohorts with holdouts, let the emulator's campaigns go
//! out to what it holds with a planted lift (members use the feature the push points to), ingest
//! the engagement, and check that `queries/analysis/lift.sql` recovers the planted effect
//! within its interval — and finds none when none was planted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use cohort_bridge::emulator::currents::{EngagementSpec, Lift, PushCampaign, write_engagement};
use cohort_bridge::lake::Location;

use crate::support::*;

const FAST: &str = "batch_size = 500\nrequests_per_second = 5000";

/// One row of lift.sql's result.
#[derive(Debug)]
struct LiftRow {
    treated: u64,
    held_out: u64,
    held_out_pct: f64,
    lift_points: f64,
    ci95_low: f64,
    ci95_high: f64,
    p_value: f64,
}

/// Syncs `sessions_without_offline` and `paid_active_30d` (their shipped SQL, holding out 30%)
/// at the tests' time, plants `lift`, and returns lift.sql's rows by campaign together with
/// what the partner held of each cohort.
fn world(lift: Lift) -> (BTreeMap<String, LiftRow>, BTreeMap<String, u64>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let partner = Partner::plain();
    let sql = |name: &str| {
        std::fs::read_to_string(root.join(format!("queries/cohorts/{name}.sql"))).unwrap()
    };
    let (offline, paid) = (sql("sessions_without_offline"), sql("paid_active_30d"));
    let project = Project::new(
        &partner.handle.base_url(),
        FAST,
        &[
            ("sessions_without_offline", &offline),
            ("paid_active_30d", &paid),
        ],
    );
    // Its own lake: the pushes' feature uses are written into it.
    project.own_lake_with_source();
    let lake_dir = project.dir.path().join("lake");
    let file = project.dir.path().join("cohort-bridge.toml");
    let currents = project.dir.path().join("currents");
    let toml = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "name = \"Cohort sessions_without_offline\"\n",
            "name = \"Cohort sessions_without_offline\"\nholdout = 0.3\n",
        )
        .replace(
            "name = \"Cohort paid_active_30d\"\n",
            "name = \"Cohort paid_active_30d\"\nholdout = 0.3\n",
        )
        + "\n[campaigns.camp-offline]\ncohort = \"sessions_without_offline\"\nfeature = \"offline_mode\"\n\
           \n[campaigns.camp-playlists]\ncohort = \"paid_active_30d\"\nfeature = \"playlists\"\nwindow = \"24h\"\n";
    std::fs::write(&file, toml).unwrap();
    for s in project.run(&["sync", "--all", "--at", AT]).summaries() {
        assert_eq!(s["outcome"], "delivered", "{s}");
        assert!(s["held_out"].as_u64().unwrap() > 500, "{s}");
    }

    // An hour after the sync, each cohort gets its push; the members react in the product.
    let held: Vec<(String, Vec<String>)> = ["sessions_without_offline", "paid_active_30d"]
        .iter()
        .map(|c| (c.to_string(), partner.members(c).into_iter().collect()))
        .collect();
    let spec = EngagementSpec {
        seed: 11,
        at: at() + Duration::hours(1),
        push_campaigns: vec![
            campaign("sessions_without_offline", "camp-offline", "offline_mode"),
            campaign("paid_active_30d", "camp-playlists", "playlists"),
        ],
        lift,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let out = Location::parse(
            &currents.display().to_string(),
            Path::new("."),
            &Default::default(),
        )
        .unwrap();
        let report = write_engagement(out.store.clone(), &out.root, &held, &spec)
            .await
            .unwrap();
        let planted = (lift.after_send + lift.after_open > 0.0) as u64;
        assert_eq!(report.planted_uses > 0, planted > 0, "{report:?}");
        let lake = Location::parse(
            &lake_dir.display().to_string(),
            Path::new("."),
            &Default::default(),
        )
        .unwrap();
        let store: Arc<dyn object_store::ObjectStore> = lake.store.clone();
        cohort_bridge::synth::write_feature_uses(
            store.as_ref(),
            &lake.root,
            &report.planted,
            "planted-test",
        )
        .await
        .unwrap();
    });
    let ingest = project.run(&["ingest"]);
    assert_eq!(ingest.code(), 0, "{}", ingest.stderr());

    let run = project.run(&[
        "query",
        "-f",
        root.join("queries/analysis/lift.sql").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let rows: Vec<serde_json::Value> = run
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    let by_campaign = rows
        .iter()
        .map(|r| {
            (
                r["campaign_id"].as_str().unwrap().to_string(),
                LiftRow {
                    treated: r["treated"].as_u64().unwrap(),
                    held_out: r["held_out"].as_u64().unwrap(),
                    held_out_pct: f(r, "held_out_pct"),
                    lift_points: f(r, "lift_points"),
                    ci95_low: f(r, "ci95_low"),
                    ci95_high: f(r, "ci95_high"),
                    p_value: r["p_value"].as_f64().unwrap_or(1.0),
                },
            )
        })
        .collect();
    let holds = held
        .iter()
        .map(|(c, m)| (c.clone(), m.len() as u64))
        .collect();
    (by_campaign, holds)
}

fn campaign(cohort: &str, id: &str, feature: &str) -> PushCampaign {
    PushCampaign {
        cohort_id: Some(cohort.into()),
        campaign_id: id.into(),
        campaign_name: id.into(),
        feature: Some(feature.into()),
    }
}

#[test]
fn the_lift_analysis_recovers_a_planted_effect_and_finds_none_where_there_is_none() {
    let lift = Lift {
        after_send: 0.04,
        after_open: 0.2,
        within: Duration::hours(12),
    };
    let (rows, holds) = world(lift);
    eprintln!("planted {:.2} points: {rows:#?}", 100.0 * lift.expected());
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (campaign, cohort) in [
        ("camp-offline", "sessions_without_offline"),
        ("camp-playlists", "paid_active_30d"),
    ] {
        let r = &rows[campaign];
        // The treated arm is what the partner held when the push went out.
        assert_eq!(r.treated, holds[cohort], "{campaign}: {r:?}");
        let share = r.held_out as f64 / (r.treated + r.held_out) as f64;
        assert!((0.26..0.34).contains(&share), "{campaign}: {share}");
        let planted = 100.0 * lift.expected() * (1.0 - r.held_out_pct / 100.0);
        assert!(
            r.ci95_low <= planted && planted <= r.ci95_high,
            "{campaign}: planted {planted:.2} points, measured {r:?}"
        );
        assert!(r.p_value < 1e-6, "{campaign}: {r:?}");
    }

    // The same world without the effect: nothing to find.
    let (rows, _) = world(Lift::default());
    eprintln!("none planted: {rows:#?}");
    for (campaign, r) in &rows {
        assert!(
            r.ci95_low <= 0.0 && 0.0 <= r.ci95_high && r.lift_points.abs() < 2.0,
            "{campaign}: no lift was planted, measured {r:?}"
        );
    }
}

/// The world built with the command line alone, as the README's "From the command line" does:
/// sync a cohort holding out 30%, `export-engagement --cohort` with a planted effect (the
/// project's own campaign of that cohort, pushed only to the members the sync delivered: never
/// to the held-out ones), ingest, and `lift.sql` recovers the planted value within its interval.
#[test]
fn a_world_built_with_the_cli_alone_recovers_its_planted_effect() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let partner = Partner::plain();
    let sql =
        std::fs::read_to_string(root.join("queries/cohorts/sessions_without_offline.sql")).unwrap();
    let project = Project::new(&partner.handle.base_url(), FAST, &[("offline", &sql)]);
    project.own_lake_with_source();
    let file = project.dir.path().join("cohort-bridge.toml");
    let toml = std::fs::read_to_string(&file).unwrap().replace(
        "name = \"Cohort offline\"\n",
        "name = \"Cohort offline\"\nholdout = 0.3\n",
    ) + "\n[campaigns.camp-mine]\ncohort = \"offline\"\nfeature = \"offline_mode\"\nwindow = \"24h\"\n";
    std::fs::write(&file, toml).unwrap();
    let s = project.run(&["sync", "offline", "--at", AT]).summary();
    assert!(s["held_out"].as_u64().unwrap() > 500, "{s}");

    let (after_send, after_open) = (0.05, 0.25);
    let push_at = (at() + chrono::Duration::hours(1)).to_rfc3339();
    let currents = project.dir.path().join("currents");
    let export = project.run(&[
        "export-engagement",
        "--out",
        currents.to_str().unwrap(),
        "--cohort",
        "offline",
        "--at",
        &push_at,
        "--lift-after-send",
        &after_send.to_string(),
        "--lift-after-open",
        &after_open.to_string(),
    ]);
    assert_eq!(export.code(), 0, "{}", export.stderr());
    let line: serde_json::Value = serde_json::from_str(export.stdout().trim()).unwrap();
    let held = partner.members("offline");
    assert_eq!(line["members"], held.len() as u64, "{line}");
    let ingest = project.run(&["ingest"]);
    assert_eq!(ingest.code(), 0, "{}", ingest.stderr());

    // Nobody held out got a push.
    let q = project.run(&[
        "query",
        "SELECT count(*) AS n FROM partner_events p JOIN cohort_changes h \
         ON h.user_id = p.external_user_id AND h.op = 'held_out' AND h.cohort = 'offline'",
        "--format",
        "json",
    ]);
    assert_eq!(q.code(), 0, "{}", q.stderr());
    assert!(q.stdout().contains("\"n\":0"), "{}", q.stdout());

    let run = project.run(&[
        "query",
        "-f",
        root.join("queries/analysis/lift.sql").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let row: serde_json::Value = run
        .stdout()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["campaign_id"] == "camp-mine")
        .unwrap_or_else(|| panic!("no row for camp-mine: {}", run.stdout()));
    let f = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k}: {row}"));
    assert_eq!(row["cohort"], "offline", "{row}");
    assert_eq!(f("treated"), held.len() as f64, "{row}");
    let planted = 100.0
        * (cohort_bridge::emulator::currents::OPEN_RATE * after_open
            + (1.0 - cohort_bridge::emulator::currents::OPEN_RATE) * after_send)
        * (1.0 - f("held_out_pct") / 100.0);
    assert!(
        f("ci95_low") <= planted && planted <= f("ci95_high"),
        "planted {planted:.2} points, measured {row}"
    );
}
