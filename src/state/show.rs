//! `state show`: everything about one cohort's state as one JSON value — the pointer and its
//! snapshot and deltas, the unfinished run, the lock, dead letters — with every problem found
//! and the command that fixes it (the command prints it: `cli::state`).

use chrono::Utc;
use datafusion::arrow::array::Array;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use super::lock;
use super::target::Target;
use super::{
    CohortState, FORMAT, PlanMeta, Pointer, Read, dead, ids, journal, replica, try_read_json,
};
use crate::cohort::shard::Shard;
use crate::error::Result;

/// The state of `t` as `state show` prints it; `partner_now`: the partner identity the project
/// names now (`None` when its secrets are not set).
pub async fn show(
    t: &Target,
    name: &str,
    shard: Option<Shard>,
    partner_now: Option<String>,
) -> Result<Value> {
    let state = &t.state;
    let store = state.store.as_ref();
    let mut problems: Vec<String> = Vec::new();

    let pointer_path = state.path(super::paths::POINTER);
    let pointer = match try_read_json::<Pointer>(store, &pointer_path).await? {
        Read::Ok(p) => Some(p),
        Read::Missing => None,
        Read::Corrupt(why) => {
            problems.push(format!(
                "{pointer_path} is unreadable ({why}): run {}",
                state.fix("repair")
            ));
            None
        }
    };
    let snapshots = state.snapshot_runs().await?;
    let started = state.started().await?;
    let snapshot = match &pointer {
        Some(p) => committed(state, p, name, partner_now.as_deref(), &mut problems).await?,
        None => {
            let orphans: Vec<&String> = snapshots
                .iter()
                .map(|(r, _)| r)
                .filter(|r| !started.contains(r))
                .collect();
            if !orphans.is_empty() {
                problems.push(format!(
                    "no readable current.json, but snapshots are there ({orphans:?}): run {}",
                    state.fix("repair")
                ));
            }
            Value::Null
        }
    };
    let plan_value = unfinished(state, &mut problems).await?;
    let lock_value = lock_file(state, &mut problems).await?;
    let dead_letters = dead_letter_files(state, &mut problems).await?;
    let replaced: Vec<_> = store
        .list(Some(&state.path("replaced")))
        .try_collect()
        .await?;

    Ok(json!({
        "cohort": t.cohort.name,
        "cohort_id": t.cohort.cohort_id,
        "destination": t.cohort.destination,
        "shard": shard.map(|s| s.to_string()),
        "dir": state.dir.to_string(),
        "partner_now": partner_now,
        "pointer": pointer,
        "snapshot": snapshot,
        "snapshots": snapshots.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        "uncommitted_snapshots": started,
        "plan": plan_value,
        "lock": lock_value,
        "dead_letters": dead_letters,
        "replaced": replaced.iter().map(|m| m.location.to_string()).collect::<Vec<_>>(),
        "shard_layouts": if shard.is_none() { json!(state.shard_counts().await?) } else { Value::Null },
        "problems": problems,
    }))
}

/// A file of ids, as `show` describes it: how many, or why it cannot be read.
fn describe(r: &std::result::Result<usize, String>) -> Value {
    match r {
        Ok(ids) => json!({"ids": ids}),
        Err(why) => json!({"error": why}),
    }
}

/// How many ids the list at `rel` holds, or why it cannot be read (its ids are not kept: a
/// snapshot and its replica of 100M UUIDs are 4 GB each).
async fn count(state: &CohortState, rel: &str) -> Result<std::result::Result<usize, String>> {
    Ok(ids::try_read_arrays(&state.store, &state.path(rel))
        .await?
        .map(|arrays| arrays.iter().map(|a| a.len()).sum()))
}

/// The committed snapshot and its deltas, each with its replica.
async fn committed(
    state: &CohortState,
    p: &Pointer,
    name: &str,
    partner_now: Option<&str>,
    problems: &mut Vec<String>,
) -> Result<Value> {
    let pointer_path = state.path(super::paths::POINTER);
    if p.format > FORMAT {
        problems.push(format!(
            "{pointer_path} has state format {}; upgrade cohort-bridge",
            p.format
        ));
    }
    if let Some(now) = partner_now
        && p.partner != now
    {
        problems.push(format!(
            "the committed snapshot is for partner `{}`, the project now names `{now}`: \
             `cohort-bridge sync {name} --rebind` (same workspace) or `--new-workspace`",
            p.partner
        ));
    }
    let main = count(state, &p.snapshot).await?;
    let copy = count(state, &replica(&p.snapshot)).await?;
    if main.is_err() || copy.is_err() {
        problems.push(format!(
            "the committed snapshot {} or its replica is missing or unreadable: run {}",
            p.snapshot,
            state.fix("repair")
        ));
    }
    let mut deltas = Vec::new();
    for d in &p.deltas {
        let mut files = serde_json::Map::new();
        for (kind, file) in [("adds", &d.adds), ("removes", &d.removes)] {
            let main = count(state, file).await?;
            let copy = count(state, &replica(file)).await?;
            if main.is_err() || copy.is_err() {
                problems.push(format!(
                    "the {kind} of committed delta {} ({file}) or its replica is missing or \
                     unreadable: run {}",
                    d.run_id,
                    state.fix("repair")
                ));
            }
            files.insert(
                kind.into(),
                json!({"path": file, "file": describe(&main), "replica": describe(&copy)}),
            );
        }
        files.insert("run_id".into(), json!(d.run_id));
        deltas.push(Value::Object(files));
    }
    Ok(
        json!({"path": p.snapshot, "file": describe(&main), "replica": describe(&copy),
        "deltas": deltas}),
    )
}

/// The unfinished run: its plan, how far its journal got, its pending dead letters.
async fn unfinished(state: &CohortState, problems: &mut Vec<String>) -> Result<Value> {
    let plan_path = state.path(super::paths::PLAN);
    let plan = match try_read_json::<PlanMeta>(state.store.as_ref(), &plan_path).await? {
        Read::Missing => return Ok(Value::Null),
        Read::Corrupt(why) => {
            problems.push(format!(
                "{plan_path} is unreadable ({why}): run {}",
                state.fix("repair")
            ));
            return Ok(Value::Null);
        }
        Read::Ok(plan) => plan,
    };
    let mut acked = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    for (path, parsed) in journal::read_objects(state, &plan).await? {
        match parsed {
            Ok(b) => acked.extend(b),
            Err(why) => bad.push(format!("{path}: {why}")),
        }
    }
    let (dead_ok, dead_bad) = pending_dead(state).await?;
    for b in bad.iter().chain(&dead_bad) {
        problems.push(format!("{b}: run {}", state.fix("repair")));
    }
    if plan.open {
        // Sent in parts and interrupted while they were planned: its totals are not known.
        let parts: Vec<_> = state
            .store
            .list(Some(&state.path(&super::paths::parts(&plan.run_id))))
            .try_collect()
            .await?;
        return Ok(json!({
            "run_id": plan.run_id, "format": plan.format, "partner": plan.partner,
            "base_run_id": plan.base_run_id, "created_at": plan.created_at,
            "open": true, "parts_planned": parts.len(),
            "batches_acknowledged": acked.len(),
            "unreadable_journal_objects": bad,
            "pending_dead_letters": dead_ok, "unreadable_dead_letter_objects": dead_bad,
            "resume": format!("cohort-bridge sync {} (closes the plan with the parts it planned)", state.label),
        }));
    }
    let total = plan.add_batches + plan.remove_batches;
    Ok(json!({
        "run_id": plan.run_id, "format": plan.format, "partner": plan.partner,
        "base_run_id": plan.base_run_id, "created_at": plan.created_at,
        "adds": plan.adds, "removes": plan.removes, "batches": total,
        "batches_acknowledged": acked.iter().filter(|&&n| n >= 1 && n <= total).count(),
        "unreadable_journal_objects": bad,
        "pending_dead_letters": dead_ok, "unreadable_dead_letter_objects": dead_bad,
        "resume": format!("cohort-bridge sync {}", state.label),
    }))
}

/// The newest lock file: held, expired, released or unreadable.
async fn lock_file(state: &CohortState, problems: &mut Vec<String>) -> Result<Value> {
    Ok(match lock::newest(state).await? {
        None => Value::Null,
        Some((path, Ok(info))) if info.released.is_some() => {
            json!({"file": path.to_string(), "released": info.released, "run_id": info.run_id})
        }
        Some((path, Ok(info))) => {
            let expired = info.expires_at <= Utc::now();
            if expired {
                problems.push(format!(
                    "an expired lock is left ({path}); the next sync takes it over, or run {}",
                    state.fix("unlock")
                ));
            }
            json!({"file": path.to_string(), "owner": info.owner, "run_id": info.run_id,
                "acquired_at": info.acquired_at, "expires_at": info.expires_at, "expired": expired})
        }
        Some((path, Err(why))) => {
            problems.push(format!(
                "{path} is unreadable ({why}): if no run is going on, run {}",
                state.fix("unlock --force")
            ));
            json!({"file": path.to_string(), "error": why})
        }
    })
}

/// The dead-letter files (records of refused ids) and how many ids each holds.
async fn dead_letter_files(state: &CohortState, problems: &mut Vec<String>) -> Result<Vec<Value>> {
    let store = state.store.as_ref();
    let mut dead_letters = Vec::new();
    let listed: Vec<_> = store
        .list(Some(&state.path(super::paths::DEAD_LETTERS)))
        .try_collect()
        .await?;
    for meta in listed {
        let bytes = store.get(&meta.location).await?.bytes().await?;
        let rows = parquet::file::reader::SerializedFileReader::new(bytes)
            .map(|r| {
                use parquet::file::reader::FileReader;
                r.metadata().file_metadata().num_rows()
            })
            .map_err(|e| e.to_string());
        dead_letters.push(match rows {
            Ok(n) => json!({"file": meta.location.to_string(), "ids": n}),
            Err(why) => {
                problems.push(format!(
                    "{} is unreadable ({why}); it is a record only (syncs never read it): \
                     delete it once you have what you need from it",
                    meta.location
                ));
                json!({"file": meta.location.to_string(), "error": why})
            }
        });
    }
    Ok(dead_letters)
}

/// The pending dead letters' batch numbers that read, and the objects that do not.
async fn pending_dead(state: &CohortState) -> Result<(usize, Vec<String>)> {
    let listed: Vec<_> = state
        .store
        .list(Some(&state.path(dead::PENDING)))
        .try_collect()
        .await?;
    let (mut ok, mut bad) = (0, Vec::new());
    for meta in listed {
        match try_read_json::<Vec<dead::DeadLetter>>(state.store.as_ref(), &meta.location).await? {
            Read::Ok(d) => ok += d.len(),
            Read::Missing => {}
            Read::Corrupt(why) => bad.push(format!("{}: {why}", meta.location)),
        }
    }
    Ok((ok, bad))
}
