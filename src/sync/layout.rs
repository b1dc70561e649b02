//! Layouts: a cohort's committed state under another way of splitting it (unsharded, or
//! another shard count), and adopting what that layout sent as this run's base.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, StringArray};
use tracing::info;

use super::Run;
use crate::cohort;
use crate::error::{Error, Result};
use crate::parallel::on_rayon;
use crate::state::{self, CohortState, Pointer, ids, lock, new_run_id, paths};

/// The committed state of one way of splitting a cohort: unsharded, or N shards.
pub(super) struct Layout {
    /// `None`: unsharded.
    shards: Option<u32>,
    /// Each part's state and its committed pointer (for this partner), in shard order.
    parts: Vec<(CohortState, Option<Pointer>)>,
    /// A part has an unfinished run, or a run holds a part's lock now.
    pub(super) busy: bool,
    /// Commits of parts for another partner identity (when they are not taken as this one's).
    pub(super) foreign: Vec<(String, DateTime<Utc>)>,
    /// Where its state lives (to name it in messages).
    dir: String,
}

impl Layout {
    fn name(&self) -> String {
        match self.shards {
            None => "unsharded".into(),
            Some(n) => format!("{n} shards"),
        }
    }

    /// The latest commit of any part.
    pub(super) fn latest(&self) -> Option<DateTime<Utc>> {
        self.parts
            .iter()
            .filter_map(|(_, p)| p.as_ref().map(|p| p.committed_at))
            .max()
    }

    /// Every part committed: the oldest of their commits.
    pub(super) fn oldest(&self) -> Option<DateTime<Utc>> {
        self.parts
            .iter()
            .map(|(_, p)| p.as_ref().map(|p| p.committed_at))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }
}

impl Run<'_> {
    /// `layout` holds what the partner was sent, but it cannot be adopted (`why`): what to do.
    pub(super) fn layout_refusal(&self, layout: &Layout, why: &str) -> Error {
        let (sync, show) = match layout.shards {
            Some(_) => (
                format!(
                    "cohort-bridge sync {} --shard K/N` for each K",
                    self.cohort.name
                ),
                format!("cohort-bridge state show {} --shard K/N", self.cohort.name),
            ),
            None => (
                format!("cohort-bridge sync {}` without --shard", self.cohort.name),
                format!("cohort-bridge state show {}", self.cohort.name),
            ),
        };
        Error::config(
            self.config.file.clone(),
            format!(
                "cohort `{}` also ran {} ({why}), so what the partner holds is not known \
                 here. Let that layout's runs finish and run every part of it once \
                 (`{sync}; `{show}` shows a part's lock and unfinished run, `state unlock` \
                 releases a dead run's lock), then switch; or, if that layout is abandoned, \
                 delete its state ({})",
                self.cohort.name,
                layout.name(),
                layout.dir,
            ),
        )
    }

    /// The other layouts of this cohort that hold anything for this partner.
    pub(super) async fn other_layouts(&self) -> Result<Vec<Layout>> {
        let mut counts: Vec<Option<u32>> = vec![None];
        counts.extend(self.root.shard_counts().await?.into_iter().map(Some));
        let own = self.options.shard.map(|s| s.count);
        let mut out = Vec::new();
        for shards in counts.into_iter().filter(|n| *n != own) {
            let states: Vec<CohortState> = match shards {
                None => vec![self.root.clone()],
                Some(n) => (0..n).map(|k| self.root.shard(k, n)).collect(),
            };
            let mut layout = Layout {
                shards,
                parts: Vec::new(),
                busy: false,
                foreign: Vec::new(),
                dir: match shards {
                    None => self.root.dir.to_string(),
                    Some(n) => format!("{}/shards/{n}", self.root.dir),
                },
            };
            for state in states {
                let pointer = match state.pointer().await? {
                    // `--rebind` takes every layout's commits as this partner's.
                    Some(p) if p.partner != self.partner && !self.options.rebind => {
                        layout.foreign.push((p.partner, p.committed_at));
                        None
                    }
                    other => other,
                };
                let plan = state.plan().await?;
                layout.busy |= plan.is_some_and(|p| p.partner == self.partner)
                    || lock::holder(&state).await?.is_some();
                layout.parts.push((state, pointer));
            }
            if layout.busy || layout.parts.iter().any(|(_, p)| p.is_some()) {
                out.push(layout);
            }
        }
        Ok(out)
    }

    /// The ids this run owns of `layout`'s snapshots, made this run's committed base (unless it
    /// is a dry run, which writes nothing).
    pub(super) async fn adopt(&self, layout: &Layout) -> Result<Arc<StringArray>> {
        let mut parts = Vec::new();
        for (state, pointer) in &layout.parts {
            let ids = state.snapshot(pointer.as_ref()).await?;
            let mine = match self.options.shard {
                Some(shard) => on_rayon(move || shard.filter(&ids)).await,
                None => ids.as_ref().clone(),
            };
            parts.push(mine);
        }
        let ids = on_rayon(move || cohort::distinct_sorted(&parts).ids).await;
        info!(cohort = %self.cohort.name, from = %layout.name(), ids = ids.len(),
            "adopting the membership committed under another layout");
        if !self.options.dry_run {
            let run_id = format!("adopted-{}", new_run_id());
            let snapshot = paths::snapshot(&run_id);
            // Not committed until the pointer names it.
            self.hold().await?;
            self.state.mark_started(&run_id).await?;
            let paths = [
                self.state.path(&snapshot),
                self.state.path(&state::replica(&snapshot)),
            ];
            ids::write_to(self.state.store.as_ref(), &paths, ids.clone()).await?;
            self.hold().await?;
            let pointer = Pointer {
                format: state::FORMAT,
                run_id: run_id.clone(),
                partner: self.partner.clone(),
                snapshot,
                members: ids.len() as u64,
                // As current as the layout it was taken from.
                committed_at: layout.latest().unwrap_or_else(Utc::now),
                at: None,
                resend_all: false,
                note: Some(format!("adopted from {}", layout.name())),
                deltas: Vec::new(),
            };
            self.state.write_pointer(&pointer).await?;
            state::delete_if_exists(
                self.state.store.as_ref(),
                &self.state.path(&paths::started(&run_id)),
            )
            .await?;
        }
        Ok(ids)
    }
}
