//! The first minutes of a new user (issue 17): `init` scaffolds a project that `check` passes
//! and `sync --all --dry-run` runs, and never overwrites; completions load in bash; the man page
//! and `--version` come from the CLI definition.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::BIN;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env("BRAZE_PARTNER_API_KEY", "pk-init-test")
        .env("BRAZE_CLIENT_SECRET", "cs-init-test")
        .env_remove("COHORT_BRIDGE_CONFIG")
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn init_then_check_and_sync_all_and_never_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("acme");
    let out = run(tmp.path(), &["init", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cohort-bridge check"),
        "{}",
        text(&out.stderr)
    );
    for (rel, content) in cohort_bridge::init::files() {
        assert_eq!(
            &std::fs::read_to_string(project.join(rel)).unwrap(),
            content,
            "{rel}"
        );
    }
    assert!(project.join("data/lake/users").is_dir());

    // `check` on the scaffold: every cohort planned, no problem (the unset keys of a real run
    // are warnings there; this test sets them).
    let out = run(&project, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (
            report["cohorts_planned"].as_u64(),
            report["problems"].as_u64()
        ),
        (Some(3), Some(0))
    );
    let out = run(&project, &["check", "active_30d"]);
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(report["cohorts_planned"], 1);
    let out = run(&project, &["check", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no cohort `nope` (the file defines: active_30d, paid_active_30d, sessions_without_offline)"), "{}", text(&out.stderr));

    // `sync --all --dry-run`: one summary per cohort, members found, nothing sent.
    let out = run(&project, &["sync", "--all", "--dry-run", "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["cohort"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["active_30d", "paid_active_30d", "sessions_without_offline"]
    );
    assert!(
        lines
            .iter()
            .all(|l| l["outcome"] == "dry_run" && l["members"].as_u64() > Some(0))
    );
    let out = run(&project, &["sync", "--no-progress"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no cohort and no --all is a usage error"
    );

    // A second init writes nothing and names what is in the way.
    std::fs::write(
        project.join("queries/cohorts/active_30d.sql"),
        "-- mine\nSELECT 1",
    )
    .unwrap();
    let out = run(tmp.path(), &["init", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("nothing written") && err.contains("cohort-bridge.toml"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("queries/cohorts/active_30d.sql")).unwrap(),
        "-- mine\nSELECT 1"
    );
    // Without the sample lake, only the files.
    let out = run(tmp.path(), &["init", "bare", "--no-sample"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(tmp.path().join("bare/cohort-bridge.toml").is_file());
    assert!(!tmp.path().join("bare/data").exists());
}

#[test]
fn completions_load_in_bash_and_the_man_page_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("cb.bash");
    let out = run(tmp.path(), &["completions", "bash"]);
    assert!(out.status.success());
    std::fs::write(&script, &out.stdout).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p cohort-bridge",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", text(&loaded.stderr));
    assert!(text(&loaded.stdout).contains("-F _cohort__bridge cohort-bridge"));
    // The subcommands are offered.
    assert!(text(&out.stdout).contains("init") && text(&out.stdout).contains("completions"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(tmp.path(), &["completions", shell]);
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
    let man = run(tmp.path(), &["man"]);
    assert!(man.status.success());
    let man = text(&man.stdout);
    assert!(
        man.contains(".TH cohort-bridge 1") && man.contains("sync"),
        "{}",
        &man[..200]
    );
    let version = run(tmp.path(), &["--version"]);
    let version = text(&version.stdout);
    assert!(
        version.starts_with(&format!(
            "cohort-bridge {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    let features = if cfg!(feature = "ballista") {
        "features: ballista)"
    } else {
        "features: none)"
    };
    assert!(version.trim_end().ends_with(features), "{version}");
}

/// The shell lines of the README's block that starts with `cohort-bridge init`, as a new user
/// pastes them: in a fresh folder, with no partner key in the environment (a dry run sends
/// nothing and needs none; `check` names the unset keys as warnings).
#[test]
fn the_readmes_init_block_runs_verbatim_without_keys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let start = readme
        .find("```sh\ncohort-bridge init ")
        .expect("the README has a block starting with `cohort-bridge init`");
    let body = &readme[start + "```sh\n".len()..];
    let block = &body[..body.find("```").expect("the block ends")];
    assert!(block.contains("sync --all --dry-run"), "{block}");
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.current_dir(tmp.path())
        .arg("-c")
        .arg(format!("set -euo pipefail\n{block}"))
        .env("PATH", path)
        .env_remove("COHORT_BRIDGE_CONFIG");
    for (var, _) in std::env::vars() {
        if var.starts_with("BRAZE_") || var.ends_with("_API_KEY") || var.ends_with("_SECRET") {
            cmd.env_remove(var);
        }
    }
    let out = cmd.output().expect("bash runs");
    assert!(
        out.status.success(),
        "the README's init block failed ({:?}):\n{block}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let dry_runs = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["outcome"] == "dry_run")
        .count();
    assert_eq!(dry_runs, 3, "one dry-run summary per cohort:\n{stdout}");
    assert!(
        tmp.path().join("my-project/cohort-bridge.1").is_file(),
        "the man page was written"
    );
}
