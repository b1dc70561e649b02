//! The README's quick start: `demo` on the committed project file and cohorts, from scratch.

use std::process::Command;

use crate::support::BIN;

#[test]
fn demo_on_the_committed_project_matches_every_cohort() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("cohort-bridge.toml"),
        dir.path().join("cohort-bridge.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("queries/cohorts")).unwrap();
    let mut cohorts = 0;
    for entry in std::fs::read_dir(root.join("queries/cohorts")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path()
                .join("queries/cohorts")
                .join(path.file_name().unwrap()),
        )
        .unwrap();
        cohorts += 1;
    }
    std::fs::create_dir_all(dir.path().join("queries/analysis")).unwrap();
    for entry in std::fs::read_dir(root.join("queries/analysis")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path()
                .join("queries/analysis")
                .join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let out = Command::new(BIN)
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("COHORT_BRIDGE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every cohort matches"), "{stdout}");
    // Two runs (full, then incremental a day later): one summary line per cohort per run.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (delivered, ingested): (Vec<_>, Vec<_>) =
        lines.into_iter().partition(|l| l.get("cohort").is_some());
    // The return path: engagement events ingested, and the push-to-feature analysis printed.
    assert_eq!(ingested.len(), 1, "{stdout}");
    assert!(
        ingested[0]["events_added"].as_u64().unwrap() > 1_000,
        "{stdout}"
    );
    assert!(
        ingested[0]["duplicates"].as_u64().unwrap() > 0,
        "duplicate deliveries are absorbed: {stdout}"
    );
    assert!(
        stdout.contains("camp-offline") && stdout.contains("not opened"),
        "{stdout}"
    );
    // The lift of each campaign against its cohort's holdout, with the planted effect found.
    for campaign in ["camp-offline", "camp-playlists"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{campaign}: planted")))
            .unwrap_or_else(|| panic!("no lift line for {campaign}: {stdout}"));
        assert!(line.ends_with(": recovered"), "{line}");
    }
    assert_eq!(delivered.len(), 2 * cohorts);
    // The same cohorts through /users/track: the attribute on exactly the same members.
    let tracked: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("[users/track]"))
        .collect();
    assert_eq!(tracked.len(), 2 * cohorts, "{stdout}");
    assert!(
        tracked.iter().all(|l| l.trim_end().ends_with("yes")),
        "{stdout}"
    );
    let (full, incremental) = delivered.split_at(cohorts);
    for s in full {
        assert_eq!(s["outcome"], "delivered", "{s}");
        if s["cohort"] != "active_30d" {
            // The project file holds out 10% of these two.
            let (members, held) = (
                s["members"].as_f64().unwrap(),
                s["held_out"].as_f64().unwrap(),
            );
            assert!((0.08..0.12).contains(&(held / (members + held))), "{s}");
        }
        assert!(s["members"].as_u64().unwrap() > 1_000, "{s}");
        assert_eq!(s["adds"], s["members"], "{s}");
    }
    for s in incremental {
        assert!(
            s["adds"].as_u64().unwrap() < s["members"].as_u64().unwrap(),
            "only the change is sent: {s}"
        );
    }
    assert!(dir.path().join("data/lake/_generated.json").exists());
}
