//! Small guards at the edges of the CLI: a webhook signing secret too short to be one is
//! refused (it would also mask its letters in every message); `init` never writes through a
//! symbolic link; a shard's `members` file says it is the shard's only; `query` streams its
//! result and a reader that stops early (`| head`) ends it quietly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_webhook_signing_secret_shorter_than_16_bytes_is_refused() {
    let project = Project::with_destination(
        lake(),
        "kind = \"webhook\"\nbase_url = \"http://127.0.0.1:9/hook\"\nsecret_env = \"IT_SHORT_SECRET\"\n\
         [destinations.braze.retry]\nmax_attempts = 1",
        &[("active", ACTIVE_30D)],
    );
    let run = project.run_with(
        &["sync", "active", "--at", AT],
        &[("IT_SHORT_SECRET", Some("h"))],
    );
    assert_eq!(run.code(), 2, "{}\n{}", run.stdout(), run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("destinations.braze.secret_env")
            && err.contains("IT_SHORT_SECRET is 1 bytes")
            && err.contains("at least 16"),
        "{err}"
    );
    // Not masked letter by letter.
    assert!(!err.contains("***"), "{err}");
    assert!(project.state_files().is_empty(), "refused before any work");
    // 16 bytes is enough (the receiver is away: the run fails, but not on the secret).
    let run = project.run_with(
        &["sync", "active", "--at", AT],
        &[("IT_SHORT_SECRET", Some("0123456789abcdef"))],
    );
    assert!(!run.stderr().contains("at least 16"), "{}", run.stderr());
}

#[test]
fn init_refuses_to_write_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("planted.toml");
    let link = dir.path().join("cohort-bridge.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let init = |dir: &std::path::Path| {
        Run(Command::new(BIN)
            .args(["init", "--no-sample"])
            .arg(dir)
            .output()
            .unwrap())
    };
    let run = init(dir.path());
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains(&link.display().to_string())
            && run.stderr().contains("symbolic link"),
        "{}",
        run.stderr()
    );
    assert!(
        !target.exists(),
        "nothing written through the dangling link"
    );
    assert!(
        !dir.path().join("queries").exists(),
        "nothing written at all"
    );

    // A folder on the way that is a link (to a real folder) is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("queries")).unwrap();
    let run = init(dir.path());
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains(&dir.path().join("queries").display().to_string()),
        "{}",
        run.stderr()
    );
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    assert!(!dir.path().join("cohort-bridge.toml").exists());

    // An empty folder: everything is written.
    let dir = tempfile::tempdir().unwrap();
    let run = init(dir.path());
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(dir.path().join("queries/cohorts/active_30d.sql").exists());
}

#[test]
fn a_shards_members_file_names_the_shard() {
    let out = tempfile::tempdir().unwrap();
    let project = Project::files(
        out.path(),
        "include_members = true",
        &[("active", ACTIVE_30D)],
    );
    let run = project.run(&["sync", "active", "--at", AT, "--shard", "1/4"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let runs = crate::files::run_folders(&out.path().join("active"));
    assert_eq!(runs.len(), 1);
    let manifest = &runs[0].1;
    assert_eq!(manifest["shard"], "1/4", "{manifest:#}");
    let members = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["op"] == "member")
        .expect("a members file");
    assert_eq!(members["shard"], "1/4", "{manifest:#}");
    assert!(
        members["note"]
            .as_str()
            .unwrap()
            .contains("not the whole cohort"),
        "{manifest:#}"
    );

    // Unsharded: no shard anywhere.
    let out2 = tempfile::tempdir().unwrap();
    let project = Project::files(
        out2.path(),
        "include_members = true",
        &[("active", ACTIVE_30D)],
    );
    project.run(&["sync", "active", "--at", AT]).summary();
    let runs = crate::files::run_folders(&out2.path().join("active"));
    let manifest = &runs[0].1;
    assert!(manifest.get("shard").is_none(), "{manifest:#}");
    let members = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["op"] == "member")
        .expect("a members file");
    assert_eq!(
        members["note"], "the whole cohort after this run",
        "{manifest:#}"
    );
}

#[test]
fn query_streams_and_a_closed_pipe_exits_quietly() {
    let project = Project::new("http://127.0.0.1:9", "", &[("active", ACTIVE_30D)]);
    // 400 million rows: collected whole, they would take minutes and gigabytes; streamed, the
    // first rows come at once.
    for format in ["csv", "table", "json"] {
        let started = Instant::now();
        let mut child = project
            .command(&[
                "query",
                "SELECT a.user_id, b.user_id AS other FROM users a CROSS JOIN users b",
                "--format",
                format,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = vec![0u8; 4096];
        stdout.read_exact(&mut first).unwrap();
        assert!(
            String::from_utf8_lossy(&first).contains("other"),
            "{format}: the header first"
        );
        // The reader goes away (`| head`).
        drop(stdout);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                panic!("{format}: still running 90 s after its reader left");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{format}: {err}");
        assert!(err.is_empty(), "{format}: quiet, got: {err}");
    }
}
