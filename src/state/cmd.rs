//! `cohort-bridge state show|unlock|repair COHORT [--shard K/N]`: look at a cohort's state,
//! release a lock whose run is gone, and repair a state file that is missing or unreadable.
//!
//! `repair` never guesses what the partner holds. It takes the run lock, then:
//! - restores a missing or damaged snapshot from its replica (and the replica from the snapshot);
//! - a missing or unreadable `current.json` is rewritten from the newest complete, readable
//!   snapshot of a committed run (the base of the unfinished run when there is one; snapshots of
//!   runs that never committed are skipped);
//! - an unreadable journal object is dropped (its batches are sent again: harmless);
//! - an unreadable pending dead-letter object is dropped and its batch un-journaled (sent again,
//!   the partner refuses those ids again and they are recorded again);
//! - an unfinished run whose `plan.json` or id lists cannot be read is set aside: the new
//!   snapshot is the committed one plus every id that run could have sent, marked
//!   `resend_all`, so the next sync re-sends every member and removes every id not in the
//!   cohort (exact, whatever that run had delivered).

use std::path::Path as FsPath;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Array, StringArray};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use super::lock::{self, Lock};
use super::{
    CohortState, FORMAT, PlanMeta, Pointer, Read, check_format, dead, delete_if_exists, ids,
    journal, new_run_id, replica, try_read_json,
};
use crate::cohort::diff;
use crate::cohort::shard::Shard;
use crate::config::{Config, env_lookup};
use crate::error::{Error, Result, exit};
use crate::parallel::on_rayon;

struct Target {
    config: Config,
    state: CohortState,
    cohort: crate::config::Cohort,
}

async fn open(config_file: &FsPath, name: &str, shard: Option<Shard>) -> Result<Target> {
    let config = crate::destinations::load_config(config_file)?;
    let cohort = config
        .cohort(name)
        .map_err(|m| Error::config(config.file.clone(), m))?;
    let lake =
        crate::lake::Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(config.file.clone(), message),
                other => other,
            })?;
    let area = super::area(&config, &lake)?;
    let root = CohortState::new(
        area.store.clone(),
        &area.root,
        &cohort.destination,
        &cohort.cohort_id,
    )
    .named(&cohort.name);
    let state = match shard {
        Some(s) => root.shard(s.index, s.count),
        None => root,
    };
    Ok(Target {
        config,
        state,
        cohort,
    })
}

impl Target {
    /// The partner identity the project names now (needs the secrets).
    fn partner(&self) -> Result<String> {
        let dest = self.config.destination(&self.cohort.destination)?;
        let creds = self
            .config
            .credentials(&self.cohort.destination, &env_lookup)?;
        Ok(crate::sync::partner_identity(dest, &creds))
    }
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

/// `state show`: everything about one cohort's state, as JSON, with what to do about problems.
pub async fn show(config_file: &FsPath, name: &str, shard: Option<Shard>) -> Result<i32> {
    let t = open(config_file, name, shard).await?;
    let state = &t.state;
    let store = state.store.as_ref();
    let mut problems: Vec<String> = Vec::new();
    let partner_now = t.partner().ok();

    let pointer_path = state.path("current.json");
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
    let mut snapshot = Value::Null;
    if let Some(p) = &pointer {
        if p.format > FORMAT {
            problems.push(format!(
                "{pointer_path} has state format {}; upgrade cohort-bridge",
                p.format
            ));
        }
        if let Some(now) = &partner_now
            && &p.partner != now
        {
            problems.push(format!(
                "the committed snapshot is for partner `{}`, the project now names `{now}`: \
                 `cohort-bridge sync {name} --rebind` (same workspace) or `--new-workspace`",
                p.partner
            ));
        }
        let main = ids::try_read(&state.store, &state.path(&p.snapshot)).await?;
        let copy = ids::try_read(&state.store, &state.path(&replica(&p.snapshot))).await?;
        let describe = |r: &std::result::Result<Arc<StringArray>, String>| match r {
            Ok(ids) => json!({"ids": ids.len()}),
            Err(why) => json!({"error": why}),
        };
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
                let main = ids::try_read(&state.store, &state.path(file)).await?;
                let copy = ids::try_read(&state.store, &state.path(&replica(file))).await?;
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
        snapshot = json!({"path": p.snapshot, "file": describe(&main), "replica": describe(&copy),
            "deltas": deltas});
    } else {
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
    }

    let plan_path = state.path("pending/plan.json");
    let mut plan_value = Value::Null;
    match try_read_json::<PlanMeta>(store, &plan_path).await? {
        Read::Missing => {}
        Read::Corrupt(why) => problems.push(format!(
            "{plan_path} is unreadable ({why}): run {}",
            state.fix("repair")
        )),
        Read::Ok(plan) => {
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
            let total = plan.add_batches + plan.remove_batches;
            plan_value = json!({
                "run_id": plan.run_id, "format": plan.format, "partner": plan.partner,
                "base_run_id": plan.base_run_id, "created_at": plan.created_at,
                "adds": plan.adds, "removes": plan.removes, "batches": total,
                "batches_acknowledged": acked.iter().filter(|&&n| n >= 1 && n <= total).count(),
                "unreadable_journal_objects": bad,
                "pending_dead_letters": dead_ok, "unreadable_dead_letter_objects": dead_bad,
                "resume": format!("cohort-bridge sync {}", state.label),
            });
        }
    }

    let lock_value = match lock::newest(state).await? {
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
    };

    let mut dead_letters = Vec::new();
    let listed: Vec<_> = store
        .list(Some(&state.path("dead_letters")))
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
    let replaced: Vec<_> = store
        .list(Some(&state.path("replaced")))
        .try_collect()
        .await?;

    print(&json!({
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
    }));
    Ok(exit::OK)
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

/// `state unlock`: releases a lock whose run is gone (expired, or a process of this host that
/// no longer runs), or any lock with `--force`. Releasing writes the next lock generation as a
/// tombstone, so the run that held the lock is fenced off: if it is only stalled, it starts no
/// further request when it wakes, commits nothing and exits 5 (see `lock`).
pub async fn unlock(
    config_file: &FsPath,
    name: &str,
    shard: Option<Shard>,
    force: bool,
) -> Result<i32> {
    let t = open(config_file, name, shard).await?;
    let state = &t.state;
    let live_released;
    let released = match lock::newest(state).await? {
        None => {
            print(&json!({"cohort": name, "outcome": "not_locked"}));
            return Ok(exit::OK);
        }
        Some((_, Ok(info))) if info.released.is_some() => {
            print(&json!({"cohort": name, "outcome": "not_locked"}));
            return Ok(exit::OK);
        }
        Some((path, Ok(info))) => {
            let live = info.expires_at > Utc::now();
            let gone = live && lock::owner_gone(&info.owner);
            if live && !gone && !force {
                return Err(Error::Locked(format!(
                    "{path}: {} holds this cohort (run {}) until {}; the lock is live. Wait for \
                     it, or if you are sure that run is dead, run {} (the run is then fenced \
                     off: it starts no further request and commits nothing; requests it already \
                     had in flight may still reach the partner, and the next sync sends their \
                     batches again)",
                    info.owner,
                    info.run_id,
                    info.expires_at,
                    state.fix("unlock --force")
                )));
            }
            live_released = live && !gone;
            if live && !gone {
                tracing::warn!(cohort = %name, owner = %info.owner, run = %info.run_id,
                    "--force: releasing a live lock; its run is fenced off from now on");
            }
            json!({"file": path.to_string(), "owner": info.owner, "run_id": info.run_id,
                "expires_at": info.expires_at, "live": live, "owner_gone": gone})
        }
        Some((path, Err(why))) => {
            // Whether its run is alive is unknown: drain as for a live one.
            live_released = true;
            if !force {
                return Err(Error::config(
                    None,
                    format!(
                        "lock file {path} is unreadable ({why}), so whether its run is alive is \
                         unknown. If no run of this cohort is going on, run {}",
                        state.fix("unlock --force")
                    ),
                ));
            }
            json!({"file": path.to_string(), "error": why})
        }
    };
    let by = if force {
        "state unlock --force"
    } else {
        "state unlock"
    };
    // A live run's requests in flight are answered before the next run may send: it notices
    // the release within its check interval, and each request ends within request_timeout.
    let drain = if live_released {
        let ttl = t.config.state.lock_ttl;
        let timeout = t
            .config
            .destination(&t.cohort.destination)
            .map(|d| d.delivery.request_timeout)
            .unwrap_or(std::time::Duration::from_secs(30));
        lock::check_every(ttl) + timeout + std::time::Duration::from_secs(1)
    } else {
        std::time::Duration::ZERO
    };
    let generation = lock::unlock(state, by, drain).await?;
    tracing::warn!(cohort = %name, generation, "lock released by `state unlock`");
    print(
        &json!({"cohort": name, "outcome": "unlocked", "released": released,
        "fence_generation": generation}),
    );
    Ok(exit::OK)
}

/// `state repair`: see the module documentation.
pub async fn repair(
    config_file: &FsPath,
    name: &str,
    shard: Option<Shard>,
    force: bool,
) -> Result<i32> {
    let t = open(config_file, name, shard).await?;
    let lock = Lock::acquire(
        &t.state,
        &format!("repair-{}", new_run_id()),
        t.config.state.lock_ttl,
    )
    .await?;
    let result = repair_locked(&t, force).await;
    let released = lock.release().await;
    let actions = result?;
    released?;
    print(&json!({
        "cohort": name,
        "shard": shard.map(|s| s.to_string()),
        "outcome": if actions.is_empty() { "nothing_to_repair" } else { "repaired" },
        "actions": actions,
        "next": format!("cohort-bridge sync {}", t.state.label),
    }));
    Ok(exit::OK)
}

async fn repair_locked(t: &Target, force: bool) -> Result<Vec<String>> {
    let state = &t.state;
    let store = state.store.as_ref();
    let mut actions = Vec::new();

    let pointer_path = state.path("current.json");
    let plan_path = state.path("pending/plan.json");
    let pointer_read = try_read_json::<Pointer>(store, &pointer_path).await?;
    let plan_read = try_read_json::<PlanMeta>(store, &plan_path).await?;
    if let Read::Ok(p) = &pointer_read {
        check_format(&pointer_path, p.format)?;
    }
    if let Read::Ok(p) = &plan_read {
        check_format(&plan_path, p.format)?;
    }

    // 1. The pointer and its snapshot.
    let pointer = match pointer_read {
        Read::Ok(p) => {
            for d in &p.deltas {
                for file in [&d.adds, &d.removes] {
                    restore_snapshot(state, file, &mut actions)
                        .await?
                        .map_err(|why| {
                            Error::config(
                                None,
                                format!(
                                    "the committed delta file {} and its replica are both \
                                     missing or unreadable ({why}), so what the partner holds \
                                     cannot be known from this state; nothing was changed. If \
                                     the partner can be emptied of this cohort, do that and run \
                                     `cohort-bridge sync {} --new-workspace`",
                                    state.path(file),
                                    state.label
                                ),
                            )
                        })?;
                }
            }
            restore_snapshot(state, &p.snapshot, &mut actions)
                .await?
                .map_err(|why| {
                    Error::config(
                        None,
                        format!(
                            "the committed snapshot {} and its replica are both missing or \
                             unreadable ({why}), so what the partner holds cannot be known from \
                             this state; nothing was changed. If the partner can be emptied of \
                             this cohort, do that and run `cohort-bridge sync {} \
                             --new-workspace`",
                            state.path(&p.snapshot),
                            state.label
                        ),
                    )
                })?;
            Some(p)
        }
        missing_or_corrupt => {
            let why = match &missing_or_corrupt {
                Read::Corrupt(why) => format!("unreadable: {why}"),
                _ => "missing".to_string(),
            };
            let plan = match &plan_read {
                Read::Ok(p) => Some(p),
                _ => None,
            };
            let mut uncommitted = state.started().await?;
            if let Some(p) = plan {
                uncommitted.push(p.run_id.clone());
            }
            let mut candidates: Vec<(String, chrono::DateTime<Utc>)> = state
                .snapshot_runs()
                .await?
                .into_iter()
                .filter(|(run, _)| !uncommitted.contains(run))
                .collect();
            // With the plan unreadable too, the pointer can only be rebuilt when nothing was
            // ever committed (a first sync's plan damaged): then the partner holds at most what
            // that run could have sent, and setting it aside (below) ends exact.
            let never_committed =
                matches!(missing_or_corrupt, Read::Missing) && candidates.is_empty();
            if matches!(plan_read, Read::Corrupt(_)) && !never_committed {
                return Err(Error::config(
                    None,
                    format!(
                        "{pointer_path} is {why} and {plan_path} is unreadable too, so which \
                         snapshot was committed cannot be told; nothing was changed. Restore \
                         either file from a backup, then run {} again",
                        state.fix("repair")
                    ),
                ));
            }
            // The unfinished run's base is the committed one; else the newest.
            candidates.sort_by_key(|(run, at)| {
                (plan.and_then(|p| p.base_run_id.as_ref()) == Some(run), *at)
            });
            candidates.reverse();
            let mut chosen = None;
            for (run, at) in &candidates {
                let snapshot = format!("snapshots/{run}.parquet");
                match restore_snapshot(state, &snapshot, &mut actions).await? {
                    Ok(ids) => {
                        chosen = Some((run.clone(), *at, snapshot, ids.len() as u64));
                        break;
                    }
                    Err(why) => actions.push(format!(
                        "skipped snapshot of run {run}: it and its replica are unreadable ({why})"
                    )),
                }
            }
            // Deltas committed on top of it: every delta run after it that is not
            // uncommitted (a commit deletes every delta file outside its own chain).
            let mut chain = Vec::new();
            if let Some((base_run, ..)) = &chosen {
                let mut runs: Vec<_> = state
                    .delta_runs()
                    .await?
                    .into_iter()
                    .filter(|(run, _)| run > base_run && !uncommitted.contains(run))
                    .collect();
                runs.sort();
                for (run, at) in runs {
                    let mut lists = Vec::new();
                    for file in [
                        format!("snapshots/{run}.adds.parquet"),
                        format!("snapshots/{run}.removes.parquet"),
                    ] {
                        match restore_snapshot(state, &file, &mut actions).await? {
                            Ok(ids) => lists.push(ids),
                            Err(why) => {
                                return Err(Error::config(
                                    None,
                                    format!(
                                        "{pointer_path} is {why} and the delta {file}, committed \
                                         after the newest snapshot, is unreadable with its \
                                         replica ({why}), so what the partner holds cannot be \
                                         known; nothing was changed",
                                    ),
                                ));
                            }
                        }
                    }
                    chain.push((
                        crate::state::Delta::of(&run, lists[0].len() as u64, lists[1].len() as u64),
                        at,
                        (lists[0].clone(), lists[1].clone()),
                    ));
                }
            }
            match chosen {
                Some((base_run, base_at, snapshot, base_members)) => {
                    let partner = match plan {
                        Some(p) => p.partner.clone(),
                        None => t.partner()?,
                    };
                    let (run_id, at, members) = match chain.last() {
                        None => (base_run, base_at, base_members),
                        Some((last, at, _)) => {
                            let base = state.ids(&snapshot).await?;
                            let changes: Vec<_> = chain.iter().map(|(_, _, l)| l.clone()).collect();
                            let members = on_rayon(move || {
                                let (a, r) = diff::net(&changes);
                                diff::apply(&base, &a, &r).len() as u64
                            })
                            .await;
                            (last.run_id.clone(), *at, members)
                        }
                    };
                    let p = Pointer {
                        format: FORMAT,
                        run_id: run_id.clone(),
                        partner,
                        snapshot,
                        members,
                        committed_at: at,
                        at: None,
                        resend_all: false,
                        deltas: chain.into_iter().map(|(d, _, _)| d).collect(),
                        note: Some(format!(
                            "restored by `state repair` at {} (current.json was {why})",
                            Utc::now().to_rfc3339()
                        )),
                    };
                    state.write_pointer(&p).await?;
                    actions.push(format!(
                        "rewrote {pointer_path} ({why}) from the snapshot of run {} and {} \
                         deltas after it, up to run {run_id} ({members} members)",
                        p.snapshot,
                        p.deltas.len()
                    ));
                    Some(p)
                }
                None if candidates.is_empty() => {
                    if matches!(missing_or_corrupt, Read::Corrupt(_)) {
                        return Err(Error::config(
                            None,
                            format!(
                                "{pointer_path} is {why} and there is no snapshot of a committed \
                                 run to rebuild it from; nothing was changed. If the partner \
                                 can be emptied of this cohort, do that, delete the file and \
                                 run `cohort-bridge sync {} --new-workspace`",
                                state.label
                            ),
                        ));
                    }
                    None // never committed: nothing to restore
                }
                None => {
                    return Err(Error::config(
                        None,
                        format!(
                            "{pointer_path} is {why} and no snapshot of a committed run is \
                             readable, so what the partner holds cannot be known; nothing was \
                             changed"
                        ),
                    ));
                }
            }
        }
    };

    // 2. The unfinished run.
    match plan_read {
        Read::Missing => {
            let journal = state.path("pending/journal");
            let listed = store.list_with_delimiter(Some(&journal)).await?;
            if !listed.objects.is_empty() {
                let why = format!("{plan_path} is missing but {journal} is not");
                set_aside_plan(t, pointer.as_ref(), None, &why, force, &mut actions).await?;
            }
        }
        Read::Corrupt(why) => {
            let why = format!("{plan_path} is unreadable: {why}");
            set_aside_plan(t, pointer.as_ref(), None, &why, force, &mut actions).await?;
        }
        Read::Ok(plan) => {
            let mut unreadable = None;
            for file in [&plan.adds_file, &plan.removes_file] {
                if let Err(why) = ids::try_read(&state.store, &state.path(file)).await? {
                    unreadable = Some(format!("{}: {why}", state.path(file)));
                }
            }
            if let Some(why) = unreadable {
                set_aside_plan(t, pointer.as_ref(), Some(&plan), &why, force, &mut actions).await?;
            } else {
                repair_journal(state, &plan, &mut actions).await?;
            }
        }
    }
    Ok(actions)
}

/// Makes a snapshot and its replica both readable from whichever of them is; the inner `Err`
/// when neither is.
async fn restore_snapshot(
    state: &CohortState,
    snapshot: &str,
    actions: &mut Vec<String>,
) -> Result<std::result::Result<Arc<StringArray>, String>> {
    let store = state.store.as_ref();
    let (main, copy) = (state.path(snapshot), state.path(&replica(snapshot)));
    let (m, c) = (
        ids::try_read(&state.store, &main).await?,
        ids::try_read(&state.store, &copy).await?,
    );
    Ok(match (m, c) {
        (Ok(ids), Ok(_)) => Ok(ids),
        (Ok(ids), Err(why)) => {
            ids::copy(store, &main, &copy).await?;
            actions.push(format!("rewrote the replica {copy} ({why}) from {main}"));
            Ok(ids)
        }
        (Err(why), Ok(ids)) => {
            ids::copy(store, &copy, &main).await?;
            actions.push(format!("restored {main} ({why}) from its replica"));
            Ok(ids)
        }
        (Err(a), Err(b)) => Err(format!("{main}: {a}; {copy}: {b}")),
    })
}

/// Drops unreadable journal objects, and unreadable pending dead letters with their batch's
/// journal entries (so those batches are sent again).
async fn repair_journal(
    state: &CohortState,
    plan: &PlanMeta,
    actions: &mut Vec<String>,
) -> Result<()> {
    let store = state.store.as_ref();
    let mut unjournal = Vec::new();
    let listed: Vec<_> = store
        .list(Some(&state.path(dead::PENDING)))
        .try_collect()
        .await?;
    for meta in listed {
        if let Read::Corrupt(why) =
            try_read_json::<Vec<dead::DeadLetter>>(store, &meta.location).await?
        {
            delete_if_exists(store, &meta.location).await?;
            match dead::batch_of(&meta.location) {
                Some(batch) => {
                    unjournal.push(batch);
                    actions.push(format!(
                        "dropped {} ({why}); batch {batch} will be sent again and its refused ids \
                         recorded again",
                        meta.location
                    ));
                }
                None => actions.push(format!("dropped {} ({why})", meta.location)),
            }
        }
    }
    let objects = journal::read_objects(state, plan).await?;
    let bad = objects.iter().any(|(_, r)| r.is_err());
    if !bad && unjournal.is_empty() {
        return Ok(());
    }
    // Rewrite the journal as one object without what cannot be trusted.
    let mut kept: Vec<u64> = objects
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flatten()
        .copied()
        .filter(|n| !unjournal.contains(n))
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let written = journal::write_object(
        state,
        &format!(
            "{}-1.acks",
            journal::writer(&plan.run_id, &format!("repair-{}", new_run_id()))
        ),
        &kept,
    )
    .await?;
    for (path, parsed) in &objects {
        if let Err(why) = parsed {
            actions.push(format!(
                "dropped the journal object {path} ({why}); the batches it named will be sent again"
            ));
        }
        if path != &written {
            delete_if_exists(store, path).await?;
        }
    }
    Ok(())
}

/// An unfinished run that cannot be read is set aside: what the partner holds is the committed
/// snapshot changed by some of that run's batches, so the new snapshot is the committed one
/// plus every id the run could have sent, and the next sync re-sends every member and removes
/// every id not in the cohort (`resend_all`).
async fn set_aside_plan(
    t: &Target,
    pointer: Option<&Pointer>,
    plan: Option<&PlanMeta>,
    why: &str,
    force: bool,
    actions: &mut Vec<String>,
) -> Result<()> {
    let state = &t.state;
    let store = state.store.as_ref();
    let committed = pointer.map(|p| p.snapshot.clone());
    let mut lists: Vec<StringArray> = Vec::new();
    if let Some(p) = pointer {
        lists.push(state.snapshot(Some(p)).await?.as_ref().clone());
    }
    // Every id the run could have sent: its adds (in its adds list, and in its target snapshot)
    // and its removes (in its removes list, and in the committed snapshot it was planned from).
    let mut unreadable = Vec::new();
    let mut read_ok: Vec<String> = Vec::new();
    let listed: Vec<_> = store
        .list(Some(&state.path("pending")))
        .try_collect()
        .await?;
    for meta in listed {
        if !meta.location.as_ref().ends_with(".parquet") {
            continue;
        }
        match ids::try_read(&state.store, &meta.location).await? {
            Ok(ids) => {
                lists.push(ids.as_ref().clone());
                read_ok.push(meta.location.to_string());
            }
            Err(e) => unreadable.push((meta.location.to_string(), e)),
        }
    }
    for (run, _) in state.snapshot_runs().await? {
        let snapshot = format!("snapshots/{run}.parquet");
        if committed.as_deref() == Some(snapshot.as_str()) {
            continue;
        }
        let (main, copy) = (state.path(&snapshot), state.path(&replica(&snapshot)));
        match ids::try_read(&state.store, &main).await? {
            Ok(ids) => lists.push(ids.as_ref().clone()),
            Err(e) => match ids::try_read(&state.store, &copy).await? {
                Ok(ids) => lists.push(ids.as_ref().clone()),
                Err(_) => {
                    unreadable.push((main.to_string(), e));
                    continue;
                }
            },
        }
        read_ok.push(main.to_string());
    }
    // Deltas outside the committed chain (the unfinished run's, when it commits as a delta):
    // their adds may have been sent; their removes are ids of the committed membership.
    let chained: Vec<String> = pointer
        .map(|p| p.deltas.iter().map(|d| d.run_id.clone()).collect())
        .unwrap_or_default();
    for (run, _) in state.delta_runs().await? {
        if chained.contains(&run) {
            continue;
        }
        let file = format!("snapshots/{run}.adds.parquet");
        let (main, copy) = (state.path(&file), state.path(&replica(&file)));
        match ids::try_read(&state.store, &main).await? {
            Ok(ids) => lists.push(ids.as_ref().clone()),
            Err(e) => match ids::try_read(&state.store, &copy).await? {
                Ok(ids) => lists.push(ids.as_ref().clone()),
                Err(_) => {
                    unreadable.push((main.to_string(), e));
                    continue;
                }
            },
        }
        read_ok.push(main.to_string());
    }
    let removes_file = state.path(plan.map_or("pending/removes.parquet", |p| &p.removes_file));
    let target = plan.map(|p| state.path(&p.target_snapshot).to_string());
    let adds_file = plan.map(|p| state.path(&p.adds_file).to_string());
    unreadable.retain(|(path, _)| {
        // Removes are ids of the committed snapshot, which the union holds anyway.
        if committed.is_some() && *path == removes_file.to_string() {
            return false;
        }
        // The target snapshot holds every add of its plan.
        !(adds_file.as_ref() == Some(path) && target.as_ref().is_some_and(|t| read_ok.contains(t)))
    });
    let unreadable: Vec<String> = unreadable
        .into_iter()
        .map(|(path, e)| format!("{path}: {e}"))
        .collect();
    if !unreadable.is_empty() && !force {
        return Err(Error::config(
            None,
            format!(
                "the unfinished run cannot be read ({why}), and neither can some of its id \
                 lists ({}), so the ids it may have sent are not all known; nothing was changed. \
                 {} sets it aside anyway: ids it added that are no longer in the cohort may \
                 then stay at the partner",
                unreadable.join("; "),
                state.fix("repair --force"),
            ),
        ));
    }
    let union = on_rayon(move || {
        lists
            .iter()
            .fold(StringArray::from(Vec::<&str>::new()), |acc, l| {
                diff::union(&acc, l)
            })
    })
    .await;
    let members = union.len() as u64;
    let run_id = format!("repaired-{}", new_run_id());
    let snapshot = format!("snapshots/{run_id}.parquet");
    ids::write_to(
        store,
        &[state.path(&snapshot), state.path(&replica(&snapshot))],
        Arc::new(union),
    )
    .await?;
    let partner = match pointer {
        Some(p) => p.partner.clone(),
        None => t.partner()?,
    };
    let p = Pointer {
        format: FORMAT,
        run_id,
        partner,
        snapshot: snapshot.clone(),
        members,
        committed_at: Utc::now(),
        at: None,
        resend_all: true,
        note: Some(format!(
            "an unfinished run was set aside by `state repair`: {why}"
        )),
        deltas: Vec::new(),
    };
    state.write_pointer(&p).await?;
    state.clean_up(std::slice::from_ref(&snapshot)).await?;
    actions.push(format!(
        "set aside the unfinished run ({why}); the next sync re-sends every member and removes \
         every one of {members} ids it may have sent that is not in the cohort"
    ));
    if !unreadable.is_empty() {
        actions.push(format!(
            "--force: ignored unreadable {}",
            unreadable.join("; ")
        ));
    }
    Ok(())
}
