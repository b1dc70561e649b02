//! The `files` destination: each run's adds and removes land as Parquet or CSV in a folder of
//! their own under the destination's URL, with the manifest written last; read back here with
//! the independent reader, they are exactly each run's change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::*;

fn files_project(out: &Path, extra: &str) -> Project {
    Project::files(out, extra, &[("active", ACTIVE_30D)])
}

/// The visible runs (folders with a manifest) in a cohort's folder of a `files` destination,
/// oldest first, with their manifests; none when the folder does not exist yet.
pub fn run_folders(cohort: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut runs: Vec<(PathBuf, serde_json::Value)> = std::fs::read_dir(cohort)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.path())
        .filter_map(|dir| {
            let text = std::fs::read_to_string(dir.join("_manifest.json")).ok()?;
            Some((dir, serde_json::from_str(&text).unwrap()))
        })
        .collect();
    runs.sort_by_key(|(_, m)| m["run_at"].as_str().unwrap().to_string());
    runs
}

fn parquet_ids(path: &Path, column: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for b in read_all(path) {
        for row in 0..b.num_rows() {
            ids.insert(string_at(&b, column, row).unwrap());
        }
    }
    ids
}

#[test]
fn each_run_writes_its_change_as_parquet_with_the_manifest_last() {
    let out = tempfile::tempdir().unwrap();
    let project = files_project(out.path(), "");
    let dry = project
        .run(&["sync", "active", "--at", AT, "--dry-run"])
        .summary();
    assert_eq!(dry["outcome"], "dry_run");
    assert!(
        !out.path().join("active").exists(),
        "a dry run writes nothing"
    );

    let first = project.run(&["sync", "active", "--at", AT]).summary();
    let expected = active_at(at());
    assert_eq!(first["adds"], expected.len() as u64);
    assert_eq!(first["requests"], 0);
    let later = at() + chrono::Duration::days(7);
    let second = project
        .run(&["sync", "active", "--at", &later.to_rfc3339()])
        .summary();
    let now = active_at(later);

    let runs = run_folders(&out.path().join("active"));
    assert_eq!(runs.len(), 2, "one folder per run");
    let (dir, manifest) = &runs[0];
    assert_eq!(manifest["cohort_id"], "active");
    assert_eq!(manifest["format"], "parquet");
    assert_eq!(manifest["column"], "external_id");
    assert_eq!(manifest["files"][0]["rows"], expected.len() as u64);
    assert!(parquet_ids(&dir.join("adds.parquet"), "external_id") == expected);
    assert!(parquet_ids(&dir.join("removes.parquet"), "external_id").is_empty());

    let (dir, manifest) = &runs[1];
    let joined: BTreeSet<String> = now.difference(&expected).cloned().collect();
    let left: BTreeSet<String> = expected.difference(&now).cloned().collect();
    assert!(!joined.is_empty() && !left.is_empty());
    assert_eq!(
        (second["adds"].as_u64(), second["removes"].as_u64()),
        (Some(joined.len() as u64), Some(left.len() as u64))
    );
    assert!(parquet_ids(&dir.join("adds.parquet"), "external_id") == joined);
    assert!(parquet_ids(&dir.join("removes.parquet"), "external_id") == left);
    assert!(manifest["run_id"].as_str().is_some_and(|r| !r.is_empty()));
    // Nothing but the lists and the manifest in a run's folder (no staging files left).
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["_manifest.json", "adds.parquet", "removes.parquet"]);
}

#[test]
fn csv_files_name_their_column() {
    let out = tempfile::tempdir().unwrap();
    let project = files_project(
        out.path(),
        "format = \"csv\"\ncolumn = \"braze_external_id\"",
    );
    project.run(&["sync", "active", "--at", AT]).summary();
    let runs = run_folders(&out.path().join("active"));
    let (dir, manifest) = &runs[0];
    assert_eq!(manifest["format"], "csv");
    let text = std::fs::read_to_string(dir.join("adds.csv")).unwrap();
    let mut lines = text.split("\r\n");
    assert_eq!(lines.next(), Some("braze_external_id"));
    let ids: BTreeSet<String> = lines.filter(|l| !l.is_empty()).map(str::to_owned).collect();
    assert!(ids == active_at(at()));
    assert_eq!(
        std::fs::read_to_string(dir.join("removes.csv")).unwrap(),
        "braze_external_id\r\n"
    );
}

#[test]
fn http_keys_on_a_files_destination_are_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let project = files_project(out.path(), "base_url = \"https://x\"\nsecret_env = \"S\"");
    let run = project.run(&["sync", "active", "--at", AT]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("destinations.braze.base_url: not a key of kind `files`"),
        "{err}"
    );
    assert!(
        err.contains("destinations.braze.secret_env: not a key of kind `files`"),
        "{err}"
    );
}
