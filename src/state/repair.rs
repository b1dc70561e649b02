//! `state repair`: repair a cohort's state files that are missing or unreadable.
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

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, StringArray};
use futures::TryStreamExt;

use super::lock::Lock;
use super::set_aside::SetAside;
use super::target::Target;
use super::{
    CohortState, Delta, FORMAT, PlanMeta, Pointer, Read, check_format, dead, delete_if_exists, ids,
    journal, new_run_id, replica, try_read_json,
};
use crate::cohort::diff;
use crate::error::{Error, Result};
use crate::parallel::on_rayon;

/// The partner identity the project names now, asked only when a repair needs it (it needs
/// the destination's secrets).
pub type PartnerNow<'a> = &'a dyn Fn() -> Result<String>;

/// `state repair` under the cohort's run lock; returns what it did (empty: nothing to repair).
pub async fn repair(t: &Target, force: bool, partner: PartnerNow<'_>) -> Result<Vec<String>> {
    let lock = Lock::acquire(
        &t.state,
        &format!("repair-{}", new_run_id()),
        t.config.state.lock_ttl,
    )
    .await?;
    let result = repair_locked(t, force, partner).await;
    let released = lock.release().await;
    let actions = result?;
    released?;
    Ok(actions)
}

async fn repair_locked(t: &Target, force: bool, partner: PartnerNow<'_>) -> Result<Vec<String>> {
    let state = &t.state;
    let store = state.store.as_ref();
    let mut actions = Vec::new();

    let pointer_path = state.path(super::paths::POINTER);
    let plan_path = state.path(super::paths::PLAN);
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
            restore_committed(state, &p, &mut actions).await?;
            Some(p)
        }
        missing_or_corrupt => {
            let plan = match &plan_read {
                Read::Ok(p) => Some(p),
                _ => None,
            };
            let plan_corrupt = matches!(plan_read, Read::Corrupt(_));
            rebuild_pointer(
                state,
                &missing_or_corrupt,
                plan,
                plan_corrupt,
                partner,
                &mut actions,
            )
            .await?
        }
    };

    // 2. The unfinished run.
    match plan_read {
        Read::Missing => {
            let journal = state.path(super::paths::JOURNAL);
            let listed = store.list_with_delimiter(Some(&journal)).await?;
            if !listed.objects.is_empty() {
                let why = format!("{plan_path} is missing but {journal} is not");
                let aside = SetAside {
                    pointer: pointer.as_ref(),
                    plan: None,
                    why: &why,
                    force,
                };
                super::set_aside::set_aside_plan(state, aside, partner, &mut actions).await?;
            }
        }
        Read::Corrupt(why) => {
            let why = format!("{plan_path} is unreadable: {why}");
            let aside = SetAside {
                pointer: pointer.as_ref(),
                plan: None,
                why: &why,
                force,
            };
            super::set_aside::set_aside_plan(state, aside, partner, &mut actions).await?;
        }
        Read::Ok(plan) => {
            let mut unreadable = None;
            // An open plan's lists are its parts (`PlanMeta::open`).
            let files = if plan.open {
                let listed: Vec<_> = store
                    .list(Some(&state.path(&super::paths::parts(&plan.run_id))))
                    .try_collect()
                    .await?;
                listed.into_iter().map(|m| m.location).collect()
            } else {
                vec![state.path(&plan.adds_file), state.path(&plan.removes_file)]
            };
            for path in files {
                if let Err(why) = ids::try_read_arrays(&state.store, &path).await? {
                    unreadable = Some(format!("{path}: {why}"));
                }
            }
            if let Some(why) = unreadable {
                let aside = SetAside {
                    pointer: pointer.as_ref(),
                    plan: Some(&plan),
                    why: &why,
                    force,
                };
                super::set_aside::set_aside_plan(state, aside, partner, &mut actions).await?;
            } else {
                repair_journal(state, &plan, &mut actions).await?;
            }
        }
    }
    Ok(actions)
}

/// The committed pointer reads: its snapshot and deltas are made readable with their replicas,
/// or the repair is refused (what the partner holds cannot be known).
async fn restore_committed(
    state: &CohortState,
    p: &Pointer,
    actions: &mut Vec<String>,
) -> Result<()> {
    for d in &p.deltas {
        for file in [&d.adds, &d.removes] {
            restore_snapshot(state, file, actions)
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
    restore_snapshot(state, &p.snapshot, actions)
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
    Ok(())
}

/// A readable snapshot of a committed run: its run, when it committed, its file and size.
type Chosen = (String, DateTime<Utc>, String, u64);
/// A delta committed on top of it, with when it committed and its adds and removes.
type Chained = (Delta, DateTime<Utc>, (Arc<StringArray>, Arc<StringArray>));

/// The pointer is missing or unreadable: it is rewritten from the newest complete, readable
/// snapshot of a committed run (the base of the unfinished run `plan` when there is one) and
/// the deltas committed after it. `None` when nothing was ever committed.
async fn rebuild_pointer(
    state: &CohortState,
    missing_or_corrupt: &Read<Pointer>,
    plan: Option<&PlanMeta>,
    plan_corrupt: bool,
    partner: PartnerNow<'_>,
    actions: &mut Vec<String>,
) -> Result<Option<Pointer>> {
    let pointer_path = state.path(super::paths::POINTER);
    let plan_path = state.path(super::paths::PLAN);
    let why = match missing_or_corrupt {
        Read::Corrupt(why) => format!("unreadable: {why}"),
        _ => "missing".to_string(),
    };
    let mut uncommitted = state.started().await?;
    if let Some(p) = plan {
        uncommitted.push(p.run_id.clone());
    }
    let mut candidates: Vec<(String, DateTime<Utc>)> = state
        .snapshot_runs()
        .await?
        .into_iter()
        .filter(|(run, _)| !uncommitted.contains(run))
        .collect();
    // With the plan unreadable too, the pointer can only be rebuilt when nothing was
    // ever committed (a first sync's plan damaged): then the partner holds at most what
    // that run could have sent, and setting it aside (below) ends exact.
    let never_committed = matches!(missing_or_corrupt, Read::Missing) && candidates.is_empty();
    if plan_corrupt && !never_committed {
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
    candidates
        .sort_by_key(|(run, at)| (plan.and_then(|p| p.base_run_id.as_ref()) == Some(run), *at));
    candidates.reverse();
    let chosen = newest_readable(state, &candidates, actions).await?;
    let chain = match &chosen {
        Some((base_run, ..)) => deltas_after(state, base_run, &uncommitted, actions).await?,
        None => Vec::new(),
    };
    let Some((base_run, base_at, snapshot, base_members)) = chosen else {
        return no_snapshot(state, missing_or_corrupt, &why, candidates.is_empty());
    };
    let partner = match plan {
        Some(p) => p.partner.clone(),
        None => partner()?,
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
    Ok(Some(p))
}

/// The first of `candidates` (committed runs, best first) whose snapshot or replica reads.
async fn newest_readable(
    state: &CohortState,
    candidates: &[(String, DateTime<Utc>)],
    actions: &mut Vec<String>,
) -> Result<Option<Chosen>> {
    for (run, at) in candidates {
        let snapshot = super::paths::snapshot(run);
        match restore_snapshot(state, &snapshot, actions).await? {
            Ok(ids) => {
                let members = ids.iter().map(|a| a.len() as u64).sum();
                return Ok(Some((run.clone(), *at, snapshot, members)));
            }
            Err(why) => actions.push(format!(
                "skipped snapshot of run {run}: it and its replica are unreadable ({why})"
            )),
        }
    }
    Ok(None)
}

/// Deltas committed on top of `base_run`: every delta run after it that is not uncommitted
/// (a commit deletes every delta file outside its own chain).
async fn deltas_after(
    state: &CohortState,
    base_run: &str,
    uncommitted: &[String],
    actions: &mut Vec<String>,
) -> Result<Vec<Chained>> {
    let pointer_path = state.path(super::paths::POINTER);
    let mut chain = Vec::new();
    let mut runs: Vec<_> = state
        .delta_runs()
        .await?
        .into_iter()
        .filter(|(run, _)| run.as_str() > base_run && !uncommitted.contains(run))
        .collect();
    runs.sort();
    for (run, at) in runs {
        let mut lists = Vec::new();
        for file in [
            super::paths::delta_adds(&run),
            super::paths::delta_removes(&run),
        ] {
            match restore_snapshot(state, &file, actions).await? {
                // A delta's lists are small (under a tenth of its target).
                Ok(ids) => lists.push(Arc::new(crate::cohort::diff::concat(&ids))),
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
            Delta::of(&run, lists[0].len() as u64, lists[1].len() as u64),
            at,
            (lists[0].clone(), lists[1].clone()),
        ));
    }
    Ok(chain)
}

/// No committed snapshot reads: nothing to restore when nothing was ever committed (`None`),
/// else the repair is refused.
fn no_snapshot(
    state: &CohortState,
    missing_or_corrupt: &Read<Pointer>,
    why: &str,
    no_candidates: bool,
) -> Result<Option<Pointer>> {
    let pointer_path = state.path(super::paths::POINTER);
    if !no_candidates {
        return Err(Error::config(
            None,
            format!(
                "{pointer_path} is {why} and no snapshot of a committed run is \
                 readable, so what the partner holds cannot be known; nothing was \
                 changed"
            ),
        ));
    }
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
    Ok(None) // never committed: nothing to restore
}

/// Makes a snapshot and its replica both readable from whichever of them is; the inner `Err`
/// when neither is.
async fn restore_snapshot(
    state: &CohortState,
    snapshot: &str,
    actions: &mut Vec<String>,
) -> Result<std::result::Result<Vec<StringArray>, String>> {
    let store = state.store.as_ref();
    let (main, copy) = (state.path(snapshot), state.path(&replica(snapshot)));
    let (m, c) = (
        ids::try_read_arrays(&state.store, &main).await?,
        ids::try_read_arrays(&state.store, &copy).await?,
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
