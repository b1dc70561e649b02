//! `state repair`, an unfinished run that cannot be read: it is set aside. What the partner
//! holds is the committed snapshot changed by some of that run's batches, so the new snapshot
//! is the committed one plus every id the run could have sent, and the next sync re-sends
//! every member and removes every id not in the cohort (`resend_all`).

use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Array, StringArray};
use futures::TryStreamExt;

use super::repair::PartnerNow;
use super::{CohortState, FORMAT, PlanMeta, Pointer, ids, new_run_id, replica};
use crate::cohort::diff;
use crate::error::{Error, Result};
use crate::parallel::on_rayon;

/// The run to set aside.
pub struct SetAside<'a> {
    /// The committed pointer (`None`: nothing was ever committed).
    pub pointer: Option<&'a Pointer>,
    /// The run's plan, when it reads.
    pub plan: Option<&'a PlanMeta>,
    /// Why it cannot be read.
    pub why: &'a str,
    /// `repair --force`: set it aside even when some of its id lists are unreadable.
    pub force: bool,
}

/// Id lists read, and those that could not be (path, why).
#[derive(Default)]
struct Lists {
    lists: Vec<StringArray>,
    read_ok: Vec<String>,
    unreadable: Vec<(String, String)>,
}

/// Sets the unfinished run aside (see the module documentation).
pub async fn set_aside_plan(
    state: &CohortState,
    aside: SetAside<'_>,
    partner: PartnerNow<'_>,
    actions: &mut Vec<String>,
) -> Result<()> {
    let SetAside {
        pointer,
        plan,
        why,
        force,
    } = aside;
    let committed = pointer.map(|p| p.snapshot.clone());
    let Lists {
        lists,
        read_ok,
        unreadable,
    } = could_have_sent(state, pointer, committed.as_deref()).await?;
    let unreadable = still_unknown(state, plan, committed.is_some(), &read_ok, unreadable);
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
    let snapshot = super::paths::snapshot(&run_id);
    ids::write_to(
        state.store.as_ref(),
        &[state.path(&snapshot), state.path(&replica(&snapshot))],
        Arc::new(union),
    )
    .await?;
    let partner = match pointer {
        Some(p) => p.partner.clone(),
        None => partner()?,
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

/// The committed snapshot and every id the run could have sent: its adds (in its adds list,
/// and in its target snapshot) and its removes (in its removes list, and in the committed
/// snapshot it was planned from).
async fn could_have_sent(
    state: &CohortState,
    pointer: Option<&Pointer>,
    committed: Option<&str>,
) -> Result<Lists> {
    let mut found = Lists::default();
    if let Some(p) = pointer {
        found
            .lists
            .push(state.snapshot(Some(p)).await?.as_ref().clone());
    }
    let listed: Vec<_> = state
        .store
        .list(Some(&state.path("pending")))
        .try_collect()
        .await?;
    for meta in listed {
        if !meta.location.as_ref().ends_with(".parquet") {
            continue;
        }
        match ids::try_read(&state.store, &meta.location).await? {
            Ok(ids) => {
                found.lists.push(ids.as_ref().clone());
                found.read_ok.push(meta.location.to_string());
            }
            Err(e) => found.unreadable.push((meta.location.to_string(), e)),
        }
    }
    for (run, _) in state.snapshot_runs().await? {
        let snapshot = super::paths::snapshot(&run);
        if committed == Some(snapshot.as_str()) {
            continue;
        }
        read_either(state, &snapshot, &mut found).await?;
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
        read_either(state, &super::paths::delta_adds(&run), &mut found).await?;
    }
    Ok(found)
}

/// Reads `file`, or its replica when it does not read.
async fn read_either(state: &CohortState, file: &str, found: &mut Lists) -> Result<()> {
    let (main, copy) = (state.path(file), state.path(&replica(file)));
    match ids::try_read(&state.store, &main).await? {
        Ok(ids) => found.lists.push(ids.as_ref().clone()),
        Err(e) => match ids::try_read(&state.store, &copy).await? {
            Ok(ids) => found.lists.push(ids.as_ref().clone()),
            Err(_) => {
                found.unreadable.push((main.to_string(), e));
                return Ok(());
            }
        },
    }
    found.read_ok.push(main.to_string());
    Ok(())
}

/// The unreadable lists whose ids the union does not hold another way.
fn still_unknown(
    state: &CohortState,
    plan: Option<&PlanMeta>,
    committed: bool,
    read_ok: &[String],
    mut unreadable: Vec<(String, String)>,
) -> Vec<String> {
    let removes_file = state.path(plan.map_or(super::paths::PENDING_REMOVES, |p| &p.removes_file));
    let target = plan.map(|p| state.path(&p.target_snapshot).to_string());
    let adds_file = plan.map(|p| state.path(&p.adds_file).to_string());
    unreadable.retain(|(path, _)| {
        // Removes are ids of the committed snapshot, which the union holds anyway.
        if committed && *path == removes_file.to_string() {
            return false;
        }
        // The target snapshot holds every add of its plan.
        !(adds_file.as_ref() == Some(path) && target.as_ref().is_some_and(|t| read_ok.contains(t)))
    });
    unreadable
        .into_iter()
        .map(|(path, e)| format!("{path}: {e}"))
        .collect()
}
