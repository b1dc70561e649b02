//! Acknowledge only what was applied (issue 25), through the binary: a `/users/track` success
//! that does not account for every object sent acknowledges nothing (retried, then the run
//! fails without committing); dead letters are counted once per id per run, when a run resumes
//! an interrupted plan and then sends its own change; a removal the partner refuses because the
//! profile no longer exists is recorded as a removal, with the partner's reason, and the next
//! run is clean.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cohort_bridge::emulator::EmulatorConfig;

use crate::proxy::{Action, Canned, Proxy};
use crate::support::*;

/// About 2% of the test lake (~390 ids).
const SQL: &str =
    "SELECT user_id FROM users WHERE right(user_id, 2) IN ('03', '17', '42', '58', '99')";
const SUFFIXES: [&str; 5] = ["03", "17", "42", "58", "99"];
/// Batches of 50 objects (below the partner's 75), three attempts each.
const DEST: &str = "batch_size = 50\nmax_in_flight = 1\nrequest_timeout = \"2s\"\n\
    requests_per_second = 5000\n[destinations.braze.retry]\nmax_attempts = 3\n\
    initial_backoff = \"5ms\"\nmax_backoff = \"20ms\"\nmax_elapsed = \"10s\"\n";

fn expected() -> BTreeSet<String> {
    users()
        .into_iter()
        .map(|u| u.user_id)
        .filter(|id| SUFFIXES.iter().any(|s| id.ends_with(s)))
        .collect()
}

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// The emulator's `/users/track` behind a proxy whose `answer` (given the request's body and
/// its number of attribute objects) applies while `hostile` is set.
struct Track {
    partner: Partner,
    _proxy: Proxy,
    hostile: Arc<AtomicBool>,
    project: Project,
}

fn track(
    config: EmulatorConfig,
    answer: impl Fn(usize, &str, usize) -> Action + Send + Sync + 'static,
) -> Track {
    let partner = Partner::start(config);
    let hostile = Arc::new(AtomicBool::new(true));
    let h = hostile.clone();
    let proxy = Proxy::start(
        &partner.handle.base_url(),
        Arc::new(move |n, path, body| {
            if !h.load(Ordering::SeqCst) || !path.ends_with("/users/track") {
                return Action::Forward;
            }
            let text = String::from_utf8_lossy(body);
            let objects = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["attributes"].as_array().map(Vec::len))
                .unwrap_or(0);
            answer(n, &text, objects)
        }),
    );
    let project = Project::users_track(&proxy.base_url(), DEST, &[("c", SQL)]);
    Track {
        partner,
        _proxy: proxy,
        hostile,
        project,
    }
}

impl Track {
    fn sync(&self) -> Run {
        self.project
            .run(&["sync", "c", "--at", AT, "--no-progress"])
    }

    fn held(&self) -> BTreeSet<String> {
        set(self.partner.handle.attribute_true("cohort_c"))
    }

    /// The run acknowledged nothing it was not told was applied: it failed (exit 1, saying
    /// `why`), committed nothing, and the batch was tried `retry.max_attempts` times; a clean
    /// run then leaves the partner holding exactly the cohort.
    fn refused_then_converges(&self, run: Run, attempts: &AtomicUsize, victim: &str, why: &str) {
        assert_eq!(
            run.code(),
            1,
            "the batch is not acknowledged: the run fails.\nstdout: {}\nstderr: {}",
            run.stdout(),
            run.stderr()
        );
        assert!(run.stderr().contains(why), "{}", run.stderr());
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "retried per the policy");
        assert!(
            !self.project.cohort_state("c").join("current.json").exists(),
            "nothing committed"
        );
        assert!(
            !self.held().contains(victim),
            "the batch never reached the partner"
        );
        self.hostile.store(false, Ordering::SeqCst);
        let clean = self.sync().summary();
        assert_eq!(clean["dead_letters"], 0, "{clean}");
        assert!(self.held() == expected(), "the clean run converges exactly");
    }
}

/// The batch holding a victim id is answered `201` with `claim(objects)` and not passed on (the
/// partner applied nothing): the run must refuse it, saying `why`, and a clean run converge.
fn a_success_that_applied_nothing(claim: fn(usize) -> serde_json::Value, why: &str) {
    let victim = expected().into_iter().nth(60).unwrap();
    let needle = format!("\"{victim}\"");
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let t = track(EmulatorConfig::default(), move |_, body, objects| {
        if !body.contains(&needle) {
            return Action::Forward;
        }
        a.fetch_add(1, Ordering::SeqCst);
        Action::Respond(Canned::new(
            201,
            &[("content-type", "application/json")],
            &claim(objects).to_string(),
        ))
    });
    let run = t.sync();
    t.refused_then_converges(run, &attempts, &victim, why);
}

#[test]
fn a_success_processing_fewer_objects_than_sent_without_errors_acknowledges_nothing() {
    a_success_that_applied_nothing(
        |objects| serde_json::json!({"message": "success", "attributes_processed": objects - 1}),
        "attributes_processed",
    );
}

#[test]
fn a_success_naming_an_item_outside_the_batch_acknowledges_nothing() {
    // 50 objects sent; the error names object 60 (below the partner's 75, outside this
    // batch): it cannot say which of ours was not applied.
    a_success_that_applied_nothing(
        |objects| {
            serde_json::json!({
                "message": "success",
                "attributes_processed": objects - 1,
                "errors": [{"type": "invalid", "input_array": "attributes", "index": objects + 10}],
            })
        },
        "outside",
    );
}

/// The value of the `cohort_bridge_sync_dead_letters` sample of cohort `c` in an OpenMetrics
/// file.
fn dead_letters_metric(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("cohort_bridge_sync_dead_letters{") && l.contains("cohort=\"c\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn dead_letters_are_counted_once_per_id_when_a_run_resumes_and_then_sends_its_own_change() {
    // Ids containing "ab" have no profile: update-only objects naming them are item errors.
    let t = track(
        EmulatorConfig {
            unknown_id_marker: Some("ab".into()),
            ..EmulatorConfig::default()
        },
        // The first run: two batches through, then the partner is down.
        |n, _, _| {
            if n < 2 {
                Action::Forward
            } else {
                Action::Respond(Canned::new(503, &[], ""))
            }
        },
    );
    let unknown: BTreeSet<String> = expected()
        .into_iter()
        .filter(|id| id.contains("ab"))
        .collect();
    assert!(!unknown.is_empty() && unknown.len() < expected().len() / 4);

    let first = t.sync();
    assert_eq!(first.code(), 1, "interrupted: {}", first.stderr());
    t.hostile.store(false, Ordering::SeqCst);

    // The next run finishes the interrupted plan (its refused ids are dead letters), then
    // sends its own change: those same ids, refused again. Each is one dead letter of this run.
    let metrics = t.project.dir.path().join("metrics.prom");
    let second = t.project.run(&[
        "sync",
        "c",
        "--at",
        AT,
        "--no-progress",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(second.code(), 3, "dead letters: {}", second.stderr());
    let summary = second.summary_any();
    assert!(
        summary["resumed_batches"].as_u64() > Some(0),
        "the run resumed the interrupted plan: {summary}"
    );
    assert_eq!(
        summary["adds"],
        unknown.len() as u64,
        "its own change re-sent the refused ids: {summary}"
    );
    assert_eq!(summary["dead_letters"], unknown.len() as u64, "{summary}");
    let runs = t.project.run(&["runs", "--format", "json"]).summaries();
    assert_eq!(runs[0]["run_id"], summary["run_id"]);
    assert_eq!(
        runs[0]["dead_letters"],
        unknown.len() as u64,
        "{:?}",
        runs[0]
    );
    assert_eq!(dead_letters_metric(&metrics), Some(unknown.len() as u64));
    let known: BTreeSet<String> = expected().difference(&unknown).cloned().collect();
    assert!(t.held() == known);
}

#[test]
fn a_removal_of_a_profile_the_partner_no_longer_has_is_recorded_as_removed() {
    // Six hours' churn commits as a delta on the snapshot, a week's as a full snapshot.
    gone_removals(6, true);
    gone_removals(7 * 24, false);
}

/// `/users/track` with update-only objects (the default): a user whose profile was deleted at
/// the partner cannot be written, not even to clear the attribute. A sync `hours` after the
/// first removes some such users.
fn gone_removals(hours: i64, delta: bool) {
    let partner = Partner::plain();
    let project = Project::users_track(
        &partner.handle.base_url(),
        "requests_per_second = 5000\nmax_in_flight = 4\n",
        &[("c", ACTIVE_30D)],
    );
    let first = project
        .run(&["sync", "c", "--at", AT, "--no-progress"])
        .summary();
    let before = active_at(at());
    assert_eq!(first["adds"], before.len() as u64);

    let later = at() + chrono::Duration::hours(hours);
    let now = active_at(later);
    let left: Vec<String> = before.difference(&now).cloned().collect();
    assert!(left.len() > 20, "the fixture churns: {}", left.len());
    // Some of those leaving were deleted at the partner in the meantime.
    let gone: BTreeSet<String> = left.iter().step_by(3).cloned().collect();
    partner
        .handle
        .delete_profiles(&gone.iter().cloned().collect::<Vec<_>>());

    let later = later.to_rfc3339();
    let second = project.run(&["sync", "c", "--at", &later, "--no-progress"]);
    assert_eq!(
        second.code(),
        0,
        "a removal of a member the partner no longer has is done, not refused.\nstdout: {}\nstderr: {}",
        second.stdout(),
        second.stderr()
    );
    let summary = second.summary();
    assert_eq!(summary["removes"], left.len() as u64);
    assert_eq!(summary["dead_letters"], 0);
    assert!(set(partner.handle.attribute_true("cohort_c")) == now);
    let pointer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.cohort_state("c").join("current.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        pointer.get("deltas").is_some(),
        delta,
        "{pointer}\n{summary}"
    );

    // The history records them as removed, with the partner's reason.
    let history = project
        .run(&[
            "query",
            "SELECT user_id, reason FROM cohort_changes WHERE op = 'remove' ORDER BY user_id",
            "--format",
            "json",
        ])
        .stdout();
    let rows: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), left.len(), "every removal is recorded");
    let with_reason: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["reason"].is_string())
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        with_reason == gone,
        "{} removals carry a reason, {} were gone",
        with_reason.len(),
        gone.len()
    );
    for r in rows.iter().filter(|r| r["reason"].is_string()) {
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("existing user"), "{reason}");
    }
    // Not dead letters: nothing of theirs is retried.
    let dead = project.cohort_state("c").join("dead_letters");
    assert!(!dead.exists() || std::fs::read_dir(&dead).unwrap().next().is_none());

    // The next run has nothing to do.
    let third = project
        .run(&["sync", "c", "--at", &later, "--no-progress"])
        .summary();
    assert_eq!(third["outcome"], "unchanged", "{third}");
    assert_eq!(third["requests"], 0);
}
