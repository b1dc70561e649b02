//! Stage 4, the plan: what a change will send, written (id lists, then `plan.json`) before
//! anything is sent, so the run can be resumed exactly.

use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Array, StringArray};

use super::Run;
use super::change::Change;
use crate::error::Result;
use crate::state::dead::{self, DeadLetter};
use crate::state::{self, Chain, PlanMeta, Pointer, ids, paths};

/// How big a change is, for the choice of a delta commit (`Run::chain_of`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) adds: u64,
    pub(super) removes: u64,
    /// Members once the change is delivered.
    pub(super) target: u64,
    /// The adds are the whole target (a first sync, `--full`): one file serves as both.
    pub(super) adds_are_target: bool,
}

impl Run<'_> {
    /// Plans `change` as run `run_id` and writes the plan. Nothing is sent before the plan is
    /// durable: a run that dies before that has sent nothing, so starting over is exact (ids
    /// sent from a plan that no file records could be stranded at the partner if they left the
    /// cohort before the next run).
    pub(super) async fn plan(&self, change: &Change, run_id: &str) -> Result<PlanMeta> {
        let plan = self.plan_meta(change, run_id);
        self.write_plan(change, &plan).await?;
        self.record_malformed(change).await?;
        Ok(plan)
    }

    /// The members refused for their email or phone (`cohort::contact`), as the plan's dead
    /// letters of batch 0 (no request carries them): written with the run's commit, like the
    /// partner's refusals.
    async fn record_malformed(&self, change: &Change) -> Result<()> {
        if change.malformed.is_empty() {
            return Ok(());
        }
        let dead: Vec<DeadLetter> = change
            .malformed
            .iter()
            .map(|m| DeadLetter {
                user_id: m.key.clone(),
                change: "add".to_string(),
                reason: m.reason.clone(),
                batch: 0,
            })
            .collect();
        self.hold().await?;
        dead::record(self.state, 0, &dead).await
    }

    /// What `change` sends and commits, as the plan of run `run_id`: its id lists, batches and
    /// target snapshot (or the chain it commits as a delta).
    fn plan_meta(&self, change: &Change, run_id: &str) -> PlanMeta {
        let target_snapshot = paths::snapshot(run_id);
        // A first sync adds the whole target: one file serves as both.
        let adds_file = if Arc::ptr_eq(&change.adds, &change.target) {
            target_snapshot.clone()
        } else {
            paths::PENDING_ADDS.to_string()
        };
        let size = self.dest.delivery.batch_size;
        let chain = self.chain(change, run_id);
        let (adds_file, removes_file) = match chain.as_ref().and_then(|c| c.deltas.last()) {
            Some(d) => (d.adds.clone(), d.removes.clone()),
            None => (adds_file, paths::PENDING_REMOVES.to_string()),
        };
        // Keys an earlier release would misread: in the lists, the membership, or the chain.
        let keys = [&change.adds, &change.removes, &change.target]
            .iter()
            .any(|l| crate::cohort::identity::needs_format_2(l))
            || (chain.is_some()
                && change
                    .base
                    .as_ref()
                    .is_some_and(|b| b.format >= state::FORMAT_KEYS));
        PlanMeta {
            format: state::plan_format(chain.is_some(), keys),
            run_id: run_id.to_string(),
            created_at: Utc::now(),
            at: self.options.at,
            base_run_id: change.base.as_ref().map(|p| p.run_id.clone()),
            partner: self.partner.clone(),
            target_snapshot,
            adds_file,
            removes_file,
            target_members: change.target.len() as u64,
            batch_size: size,
            adds: change.adds.len() as u64,
            removes: change.removes.len() as u64,
            add_batches: change.adds.len().div_ceil(size) as u64,
            remove_batches: change.removes.len().div_ceil(size) as u64,
            chain,
            open: false,
            add_parts: Vec::new(),
        }
    }

    /// An incremental change commits as a delta while the chain stays short and small (see
    /// `state`): the chain it commits. `None`: the run writes a full snapshot (compaction).
    fn chain(&self, change: &Change, run_id: &str) -> Option<Chain> {
        let sizes = Sizes {
            adds: change.adds.len() as u64,
            removes: change.removes.len() as u64,
            target: change.target.len() as u64,
            adds_are_target: Arc::ptr_eq(&change.adds, &change.target),
        };
        self.chain_of(change.base.as_ref(), sizes, run_id)
    }

    /// [`Run::chain`] of a change of `sizes` over `base`.
    pub(super) fn chain_of(
        &self,
        base: Option<&Pointer>,
        sizes: Sizes,
        run_id: &str,
    ) -> Option<Chain> {
        base.and_then(|base| {
            let change_ids = sizes.adds + sizes.removes;
            let fits = !sizes.adds_are_target
                && !self.options.full
                && !base.resend_all
                && base.deltas.len() < self.config.state.max_deltas as usize
                && (base.delta_ids() + change_ids) * 10 <= sizes.target;
            fits.then(|| {
                let mut deltas = base.deltas.clone();
                deltas.push(state::Delta::of(run_id, sizes.adds, sizes.removes));
                Chain {
                    snapshot: base.snapshot.clone(),
                    deltas,
                }
            })
        })
    }

    /// Writes the plan's id lists, then `plan.json`: from then on the run is resumable.
    /// An incremental plan needs only its adds and removes for that (the target snapshot is
    /// written afterwards, and rebuilt by `finish` if a crash came first); a first sync's adds
    /// *are* the target.
    async fn write_plan(&self, change: &Change, plan: &PlanMeta) -> Result<()> {
        let store = self.state.store.as_ref();
        let delta = plan.chain.is_some();
        self.hold().await?;
        if plan.adds_file == plan.target_snapshot || delta {
            // These files sit under snapshots/ before their plan exists: mark them as not
            // committed (`state repair` must not take them for a committed run's).
            self.state.mark_started(&plan.run_id).await?;
        }
        // A first sync's target snapshot gets its replica while the batches go out; a delta's
        // files get theirs now (they are small, and are what the commit will name).
        let write = |file: &str, ids: &Arc<StringArray>| {
            let mut paths = vec![self.state.path(file)];
            if delta {
                paths.push(self.state.path(&state::replica(file)));
            }
            let ids = ids.clone();
            async move { ids::write_to(store, &paths, ids).await }
        };
        tokio::try_join!(
            write(&plan.adds_file, &change.adds),
            write(&plan.removes_file, &change.removes),
        )?;
        self.hold().await?;
        state::write_json(store, &self.state.path(paths::PLAN), plan).await
    }
}
