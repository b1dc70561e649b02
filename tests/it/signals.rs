//! SIGTERM and SIGINT stop a sync cleanly: no new batches, the answers in flight journaled, the
//! run recorded as `interrupted`, the lock released, exit 143/130; the next run resumes exactly
//! and reports `delivered`.

use crate::incremental::{ACTIVE_7D, T1, active_7d, wait_until};
use crate::support::*;

/// Sends `signal` (`TERM`, `INT`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The lock files of a cohort's state that hold it (not the tombstones released locks leave).
pub fn locks(state: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("lock-"))
                .filter(|e| {
                    let info: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(e.path()).unwrap_or_default())
                            .unwrap_or_default();
                    info.get("released").is_none()
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn stopped_cleanly_then_resumed(sig: &str, code: i32) {
    // The client's own pacing makes the run last long enough to be signalled.
    let partner = Partner::plain();
    let dest = "batch_size = 50\nrequests_per_second = 30\nmax_in_flight = 4";
    let project = Project::new(&partner.handle.base_url(), dest, &[("active", ACTIVE_7D)]);
    let expected = active_7d(T1);
    let batches = expected.len().div_ceil(50) as u64;

    let child = project
        .command(&["sync", "active", "--at", T1])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("some batches acknowledged", || {
        partner.handle.stats().user_requests_applied >= 12
    });
    signal(child.id(), sig);
    let started = std::time::Instant::now();
    let out = Run(child.wait_with_output().unwrap());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "stopped promptly"
    );
    assert_eq!(out.code(), code, "stderr:\n{}", out.stderr());
    assert!(
        out.stderr().contains(&format!("SIG{sig}")),
        "{}",
        out.stderr()
    );
    let line = out.summary_any();
    assert_eq!(line["outcome"], "interrupted", "{line}");
    assert!(
        locks(&project.cohort_state("active")).is_empty(),
        "the lock is released"
    );
    let applied = partner.handle.stats().user_requests_applied;
    assert!(applied < batches, "the run was stopped before the end");
    // Nothing is sent after the run ended.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(partner.handle.stats().user_requests_applied, applied);

    let history = project.run(&["runs", "--format", "json"]).summaries();
    assert_eq!(history[0]["outcome"], "interrupted", "{history:?}");
    assert_eq!(history[0]["exit_code"], code);

    // The next run resumes exactly: every acknowledged batch was journaled.
    let fast = std::fs::read_to_string(project.dir.path().join("cohort-bridge.toml"))
        .unwrap()
        .replace("requests_per_second = 30", "requests_per_second = 5000");
    std::fs::write(project.dir.path().join("cohort-bridge.toml"), fast).unwrap();
    let resumed = project.run(&["sync", "active", "--at", T1]).summary();
    assert_eq!(resumed["outcome"], "delivered", "{resumed}");
    let (sent, skipped) = (
        resumed["resumed_batches"].as_u64().unwrap(),
        resumed["skipped_batches"].as_u64().unwrap(),
    );
    assert!(sent > 0, "{resumed}");
    assert_eq!(sent + skipped, batches);
    assert_eq!(
        skipped, applied,
        "exactly the acknowledged batches are skipped"
    );
    assert!(
        partner.members("active") == expected,
        "the partner holds a different set than the cohort"
    );
    let stats = partner.handle.stats();
    assert_eq!(
        (stats.redundant_adds, stats.redundant_removes),
        (0, 0),
        "nothing was sent twice"
    );
    let history = project.run(&["runs", "--format", "json"]).summaries();
    assert_eq!(history[0]["outcome"], "delivered");
}

#[test]
fn sigterm_stops_a_sync_cleanly_with_143_and_the_next_run_resumes_exactly() {
    stopped_cleanly_then_resumed("TERM", 143);
}

#[test]
fn sigint_stops_a_sync_cleanly_with_130() {
    stopped_cleanly_then_resumed("INT", 130);
}
