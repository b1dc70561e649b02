//! Membership history: `cohort_changes` holds what every committed sync changed at the partner,
//! and `queries/analysis/members_as_of.sql` gives each cohort's members at any time.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::incremental::{ACTIVE_7D, T1, T2, active_7d};
use crate::support::*;

fn members_as_of(project: &Project, at: &str) -> BTreeSet<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/analysis/members_as_of.sql");
    let run = project.run(&[
        "query",
        "-f",
        file.to_str().unwrap(),
        "--at",
        at,
        "--format",
        "csv",
    ]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let out = run.stdout();
    let mut lines = out.lines();
    // The cohort by its name and by the partner's id (the fixture names it `active` both ways).
    assert_eq!(lines.next(), Some("destination,cohort,cohort_id,user_id"));
    lines
        .map(|l| {
            let parts: Vec<&str> = l.split(',').collect();
            assert_eq!(&parts[..3], ["braze", "active", "active"], "{l}");
            parts[3].to_string()
        })
        .collect()
}

#[test]
fn cohort_changes_tell_who_was_in_the_cohort_when() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 200\nrequests_per_second = 5000",
        &[("active", ACTIVE_7D)],
    );
    let state = project.cohort_state("active");
    // A full sync, a day's change (a full snapshot), an hour's change (a delta).
    let t2: DateTime<Utc> = T2.parse().unwrap();
    let times = [
        T1.to_string(),
        T2.to_string(),
        (t2 + Duration::hours(1)).to_rfc3339(),
    ];
    let mut commits = Vec::new();
    for at in &times {
        let s = project.run(&["sync", "active", "--at", at]).summary();
        let pointer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("current.json")).unwrap()).unwrap();
        let committed: DateTime<Utc> = pointer["committed_at"].as_str().unwrap().parse().unwrap();
        commits.push((at.clone(), committed, s));
    }

    // Per run, the table holds the summary's adds and removes, at the run's time and commit.
    let csv = project
        .run(&[
            "query",
            "SELECT run_at_ms, committed_at_ms, op, count(*) AS n FROM cohort_changes \
             WHERE cohort = 'active' GROUP BY run_at_ms, committed_at_ms, op \
             ORDER BY committed_at_ms, op",
            "--format",
            "csv",
        ])
        .stdout();
    let mut want = String::from("run_at_ms,committed_at_ms,op,n\n");
    for (at, committed, s) in &commits {
        let at: DateTime<Utc> = at.parse().unwrap();
        for (op, key) in [("add", "adds"), ("remove", "removes")] {
            if s[key].as_u64().unwrap() > 0 {
                want.push_str(&format!(
                    "{},{},{op},{}\n",
                    at.timestamp_millis(),
                    committed.timestamp_millis(),
                    s[key]
                ));
            }
        }
    }
    assert_eq!(csv, want);

    // As of each commit, exactly the cohort of that run's time; before the first, nobody.
    for (at, committed, _) in &commits {
        let asof = committed.to_rfc3339_opts(SecondsFormat::Micros, true);
        assert!(
            members_as_of(&project, &asof) == active_7d(at),
            "as of the commit of the run at {at}"
        );
    }
    let before = (commits[0].1 - Duration::seconds(1)).to_rfc3339();
    assert!(members_as_of(&project, &before).is_empty());
}
