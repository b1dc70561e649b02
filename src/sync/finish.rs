//! Stage 6, the commit: a delivered plan's snapshot (without refused ids) made the committed
//! one, its dead letters written, and what it changed kept in the run history.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use object_store::ObjectStoreExt;

use super::Run;
use super::deliver::Sent;
use crate::cohort::diff;
use crate::error::Result;
use crate::parallel::on_rayon;
use crate::state::dead::{self, DeadLetter};
use crate::state::{self, Chain, PlanMeta, ids};

impl Run<'_> {
    /// Commits a delivered plan while this run still holds the lock; `sent` with the ids the
    /// commit dead-lettered.
    pub(super) async fn commit(&self, plan: &PlanMeta, sent: Sent) -> Result<Sent> {
        self.hold().await?;
        let dead_letters = self.finish(plan).await?;
        Ok(Sent {
            dead_letters,
            ..sent
        })
    }

    /// Every batch of `plan` is acknowledged or dead-lettered: leave the refused ids out of
    /// the snapshot (a refused add is not a member at the partner; a refused remove still is),
    /// write the dead letters, then switch the pointer. Safe to repeat after a crash. Returns
    /// how many ids were dead-lettered that this run had not counted yet. A removal of a
    /// profile the partner no longer has is done: no dead letter, its reason in the history.
    async fn finish(&self, plan: &PlanMeta) -> Result<u64> {
        let store = self.state.store.as_ref();
        let target_path = self.state.path(&plan.target_snapshot);
        let pending = dead::pending(self.state).await?;
        let dead = dead::refusals(&pending);
        // Refused ids: a delta run compacts instead (its snapshot is rebuilt, then adjusted).
        if let Some(chain) = &plan.chain
            && dead.is_empty()
        {
            return self.commit_delta(plan, chain, &pending).await;
        }
        if plan.chain.is_some()
            || matches!(
                store.head(&target_path).await,
                Err(object_store::Error::NotFound { .. })
            )
        {
            self.rebuild_target(plan).await?;
        }
        let mut members = plan.target_members;
        if !dead.is_empty() {
            members = self.leave_out_refused(plan, &dead).await?;
        } else {
            let replica = self.state.path(&state::replica(&plan.target_snapshot));
            if let Err(object_store::Error::NotFound { .. }) = store.head(&replica).await {
                ids::copy(store, &target_path, &replica).await?;
            }
        }
        self.hold().await?;
        let pointer = self.state.commit(plan, members, None).await?;
        self.record_history(plan, pointer.committed_at, &pending)
            .await?;
        self.hold().await?;
        self.state
            .clean_up(std::slice::from_ref(&plan.target_snapshot))
            .await?;
        let mut counted = self
            .dead_counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(dead
            .iter()
            .filter(|d| counted.insert(d.user_id.clone()))
            .count() as u64)
    }

    /// Commits a delta plan nobody refused an id of: the pointer names `chain` (no snapshot is
    /// written). No dead letters to count.
    async fn commit_delta(
        &self,
        plan: &PlanMeta,
        chain: &Chain,
        pending: &[DeadLetter],
    ) -> Result<u64> {
        self.hold().await?;
        let pointer = self
            .state
            .commit(plan, plan.target_members, Some(chain))
            .await?;
        self.record_history(plan, pointer.committed_at, pending)
            .await?;
        self.hold().await?;
        self.state.clean_up(&pointer.files()).await?;
        Ok(0)
    }

    /// Rewrites the target snapshot (and its replica) without the refused adds and with the
    /// refused removes, and writes the dead letters: the members the snapshot then holds.
    async fn leave_out_refused(&self, plan: &PlanMeta, dead: &[DeadLetter]) -> Result<u64> {
        let store = self.state.store.as_ref();
        let target_path = self.state.path(&plan.target_snapshot);
        let target = self.state.id_arrays(&plan.target_snapshot).await?;
        let pick = |change: &str| {
            let mut v: Vec<&str> = dead
                .iter()
                .filter(|d| d.change == change)
                .map(|d| d.user_id.as_str())
                .collect();
            v.sort_unstable();
            v.dedup();
            StringArray::from(v)
        };
        let (refused_adds, refused_removes) = (pick("add"), pick("remove"));
        // (target − refused adds) ∪ refused removes, in arrays of up to 2 GiB (100M UUIDs).
        let (adjusted, members) = on_rayon(move || {
            let base =
                diff::Base::with_changes(target, Arc::new(refused_removes), Arc::new(refused_adds));
            (
                base.union_in_chunks(&[], crate::storage::ids::ARRAY_BYTES),
                base.len() as u64,
            )
        })
        .await;
        let paths = [
            target_path.clone(),
            self.state.path(&state::replica(&plan.target_snapshot)),
        ];
        ids::write_parts(store, &paths, adjusted).await?;
        dead::write(
            self.state,
            &plan.run_id,
            &self.cohort.cohort_id,
            plan.at,
            dead,
        )
        .await?;
        Ok(members)
    }

    /// Keeps what a committed run changed at the partner under `history/` (the
    /// `cohort_changes` table): its adds and removes files, copied (a hard link on a local
    /// filesystem, a server-side copy on object stores, so a 10M-id first sync costs no
    /// rewrite), or, when the partner refused ids, the lists without them (and the removes
    /// with the reason of those the partner had no profile for, `dead::GONE`). Runs after the
    /// commit and before `pending/` is removed, so a run that dies in between records it on
    /// the next run; the same paths are written again, so that is idempotent.
    pub(super) async fn record_history(
        &self,
        plan: &PlanMeta,
        committed_at: DateTime<Utc>,
        dead: &[dead::DeadLetter],
    ) -> Result<()> {
        let store = self.state.store.as_ref();
        let dir = state::history::run_dir(
            &self.history,
            &self.cohort.destination,
            &self.cohort.cohort_id,
            plan.at,
            committed_at,
        );
        for (op, file, count) in [
            ("add", &plan.adds_file, plan.adds),
            ("remove", &plan.removes_file, plan.removes),
        ] {
            if count == 0 {
                continue;
            }
            let to = state::history::file(&dir, op);
            let refused: Vec<&str> = dead
                .iter()
                .filter(|d| d.change == op)
                .map(|d| d.user_id.as_str())
                .collect();
            let gone: std::collections::HashMap<&str, &str> = dead
                .iter()
                .filter(|d| op == "remove" && d.change == dead::GONE)
                .map(|d| (d.user_id.as_str(), d.reason.as_str()))
                .collect();
            if !gone.is_empty() {
                // Refused removes are never gone ones (one answer per id).
                let ids = self.state.ids(file).await?;
                let mut refused = refused;
                refused.sort_unstable();
                refused.dedup();
                let refused = StringArray::from(refused);
                let kept = on_rayon(move || diff::diff(&refused, &ids).adds).await;
                state::history::write_with_reasons(store, &to, &kept, &gone).await?;
            } else if refused.is_empty() {
                let from = self.state.path(file);
                if let Err(e) = store.copy(&from, &to).await {
                    // Some S3-compatible servers refuse copies (s3s-fs: into a new prefix):
                    // read and write the bytes instead.
                    tracing::debug!(error = %e, "history: the store's copy failed; copying the bytes");
                    ids::copy(store, &from, &to).await?;
                }
            } else {
                // The list without the refused ids, in arrays of up to 2 GiB (a first sync's
                // adds of 100M UUIDs are past one).
                let ids = self.state.id_arrays(file).await?;
                let mut refused = refused;
                refused.sort_unstable();
                refused.dedup();
                let refused = Arc::new(StringArray::from(refused));
                let kept = on_rayon(move || {
                    let empty = Arc::new(StringArray::from(Vec::<&str>::new()));
                    diff::Base::with_changes(ids, empty, refused)
                        .union_in_chunks(&[], crate::storage::ids::ARRAY_BYTES)
                })
                .await;
                ids::write_parts(store, std::slice::from_ref(&to), kept).await?;
            }
        }
        Ok(())
    }
}
