//! Stage 1, resuming: an interrupted run's plan finished exactly before this run's change,
//! and a plan's target membership rebuilt from its base and its lists.

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use tracing::info;

use super::Run;
use super::deliver::Sent;
use super::plan::Sizes;
use crate::cohort::diff;
use crate::deliver::sender::Sender;
use crate::destinations::Delivery;
use crate::error::{Error, Result};
use crate::parallel::on_rayon;
use crate::state::dead;
use crate::state::{self, PlanMeta, Pointer, ids, paths};
use futures::TryStreamExt;

impl Run<'_> {
    /// Finishes exactly the plan of an interrupted run, if there is one: delivers what its
    /// journal does not hold and commits it (`Sent`); or, when it committed and died before
    /// its history was kept, keeps that and cleans up (`None`: nothing sent). With no plan, a
    /// journal left behind means a lost plan: refused.
    pub(super) async fn resume(
        &self,
        delivery: &Delivery,
        sender: Option<&Sender>,
    ) -> Result<Option<Sent>> {
        let Some(mut plan) = self.state.plan().await? else {
            self.refuse_lost_plan().await?;
            return Ok(None);
        };
        let pointer = self.state.pointer().await?;
        let discard =
            plan.partner != self.partner && self.plan_of_another_partner(&mut plan).await?;
        if discard {
            let keep = pointer.as_ref().map(Pointer::files).unwrap_or_default();
            self.hold().await?;
            self.state.clean_up(&keep).await?;
        } else if let Some(p) = pointer.as_ref().filter(|p| p.run_id == plan.run_id) {
            // It committed and died before its history was kept or while cleaning up.
            let dead = dead::pending(self.state).await?;
            self.hold().await?;
            self.record_history(&plan, p.committed_at, &dead).await?;
            self.hold().await?;
            self.state.clean_up(&p.files()).await?;
        } else {
            info!(cohort = %self.cohort.name, run = %plan.run_id, "resuming an interrupted run");
            if plan.open {
                match self.close_open_plan(&plan, pointer.as_ref()).await? {
                    Some(closed) => plan = closed,
                    None => return Ok(None),
                }
            }
            // Everything the commit will need must be readable before anything is sent.
            dead::pending(self.state).await?;
            let sent = self.deliver(&plan, delivery, sender, None).await?;
            return Ok(Some(self.commit(&plan, sent).await?));
        }
        Ok(None)
    }

    /// Closes the open plan of a run that died while its parts were being planned
    /// (`pipeline`): with the parts it planned alone — their adds, no removals (those were
    /// never sent), the membership the base plus those adds — as the plan a run that stopped
    /// there would have made. Later parts were never sent: the next change diffs them. `None`
    /// when no part was planned (nothing was sent): the plan is dropped.
    async fn close_open_plan(
        &self,
        plan: &PlanMeta,
        pointer: Option<&Pointer>,
    ) -> Result<Option<PlanMeta>> {
        let store = self.state.store.as_ref();
        let listed: Vec<_> = self
            .state
            .store
            .list(Some(&self.state.path(&paths::parts(&plan.run_id))))
            .try_collect()
            .await?;
        let mut names: Vec<String> = listed
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        names.sort();
        for (k, name) in names.iter().enumerate() {
            if paths::part(&plan.run_id, k) != format!("{}/{name}", paths::parts(&plan.run_id)) {
                return Err(self.state.unreadable(
                    &self.state.path(&paths::parts(&plan.run_id)),
                    &format!("part {k} of the open plan is missing (found {name})"),
                    "repair",
                ));
            }
        }
        if names.is_empty() {
            info!(cohort = %self.cohort.name, run = %plan.run_id,
                "the interrupted run had planned no part: nothing was sent; dropping its plan");
            let keep = pointer.map(Pointer::files).unwrap_or_default();
            self.hold().await?;
            self.state.clean_up(&keep).await?;
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(names.len());
        for k in 0..names.len() {
            parts.push(
                self.state
                    .ids(&paths::part(&plan.run_id, k))
                    .await?
                    .as_ref()
                    .clone(),
            );
        }
        let base = match (&plan.base_run_id, pointer) {
            (None, _) => None,
            (Some(run), Some(p)) if &p.run_id == run => Some((p, self.state.base(Some(p)).await?)),
            (Some(run), _) => return Err(self.base_gone(run)),
        };
        let adds: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let keys = parts.iter().any(crate::cohort::identity::needs_format_2);
        let size = plan.batch_size;
        let add_parts: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
        let mut closed = PlanMeta {
            open: false,
            adds,
            removes: 0,
            add_batches: add_parts.iter().map(|&n| n.div_ceil(size as u64)).sum(),
            remove_batches: 0,
            add_parts: if add_parts.len() > 1 {
                add_parts
            } else {
                Vec::new()
            },
            adds_file: paths::PENDING_ADDS.to_string(),
            removes_file: paths::PENDING_REMOVES.to_string(),
            chain: None,
            ..plan.clone()
        };
        let target = self.state.path(&plan.target_snapshot);
        let empty = StringArray::from(Vec::<&str>::new());
        self.hold().await?;
        self.state.mark_started(&plan.run_id).await?;
        let mut replicas = false;
        match base {
            None => {
                // A first sync: its adds are its target.
                closed.adds_file = plan.target_snapshot.clone();
                closed.target_members = adds;
                ids::write_parts(store, std::slice::from_ref(&target), parts).await?;
            }
            Some((pointer, base)) => {
                // The adds are new ids (unless the run re-sent everyone): the membership is
                // the base's and theirs.
                let added = parts.clone();
                let (base, new) = on_rayon(move || {
                    let mut walk = base.walk();
                    let new: usize = added.iter().map(|p| walk.part(p).len()).sum();
                    drop(walk);
                    (base, new)
                })
                .await;
                closed.target_members = (base.len() + new) as u64;
                let sizes = Sizes {
                    adds: new as u64,
                    removes: 0,
                    target: closed.target_members,
                    adds_are_target: new as u64 != adds,
                };
                match self.chain_of(Some(pointer), sizes, &plan.run_id) {
                    // Committed as a delta, as the run would have (no snapshot written).
                    Some(chain) => {
                        let delta = chain.deltas.last().expect("a delta").clone();
                        (closed.adds_file, closed.removes_file) = (delta.adds, delta.removes);
                        closed.chain = Some(chain);
                        replicas = true;
                        let paths = [
                            self.state.path(&closed.adds_file),
                            self.state.path(&state::replica(&closed.adds_file)),
                        ];
                        ids::write_parts(store, &paths, parts).await?;
                    }
                    None => {
                        let added = parts.clone();
                        let members = on_rayon(move || {
                            base.union_in_chunks(&added, crate::storage::ids::ARRAY_BYTES)
                        })
                        .await;
                        let adds_path = self.state.path(paths::PENDING_ADDS);
                        tokio::try_join!(
                            ids::write_parts(store, std::slice::from_ref(&adds_path), parts),
                            ids::write_parts(store, std::slice::from_ref(&target), members),
                        )?;
                    }
                }
            }
        }
        if closed.add_parts.is_empty() {
            closed.format = state::plan_format(closed.chain.is_some(), keys);
        }
        let mut removes_paths = vec![self.state.path(&closed.removes_file)];
        if replicas {
            removes_paths.push(self.state.path(&state::replica(&closed.removes_file)));
        }
        ids::write_parts(store, &removes_paths, vec![empty]).await?;
        self.hold().await?;
        state::write_json(store, &self.state.path(paths::PLAN), &closed).await?;
        info!(cohort = %self.cohort.name, run = %plan.run_id, parts = closed.add_parts.len().max(1),
            adds = closed.adds, "closed the interrupted run's plan with the parts it had planned");
        Ok(Some(closed))
    }

    /// The error when an unfinished run's base is no longer the committed snapshot.
    fn base_gone(&self, run: &str) -> Error {
        Error::config(
            None,
            format!(
                "{}: the unfinished run's base snapshot (run {run}) is no longer the committed \
                 one, so its target cannot be rebuilt; nothing was committed. Run {} (it sets \
                 the unfinished run aside and makes the next sync re-send everything and \
                 remove what left)",
                self.state.dir,
                self.state.fix("repair")
            ),
        )
    }

    /// A crash came before the target snapshot was written: it is `(base − removes) ∪ adds`,
    /// and the base is still there (it is only deleted after the pointer moves past it).
    pub(super) async fn rebuild_target(&self, plan: &PlanMeta) -> Result<()> {
        let target = self.target_of(plan).await?;
        let store = self.state.store.as_ref();
        let path = self.state.path(&plan.target_snapshot);
        ids::write_parts(store, std::slice::from_ref(&path), target).await
    }

    /// The membership once `plan` is delivered, rebuilt from its base and its lists, in arrays
    /// of up to 2 GiB of ids each (100M UUIDs are past one).
    pub(super) async fn target_of(&self, plan: &PlanMeta) -> Result<Vec<StringArray>> {
        let base = match &plan.base_run_id {
            None => None,
            Some(run) => {
                let pointer = self.state.pointer().await?;
                match pointer {
                    Some(p) if &p.run_id == run => Some(self.state.base(Some(&p)).await?),
                    _ => return Err(self.base_gone(run)),
                }
            }
        };
        let adds = self.state.id_arrays(&plan.adds_file).await?;
        let removes = self.state.ids(&plan.removes_file).await?;
        Ok(on_rayon(move || {
            let Some(base) = base else {
                return adds;
            };
            // (base − removes) ∪ adds: the base's membership first (its deltas applied).
            let members = base.union_in_chunks(&[], crate::storage::ids::ARRAY_BYTES);
            let empty = Arc::new(StringArray::from(Vec::<&str>::new()));
            diff::Base::with_changes(members, empty, removes)
                .union_in_chunks(&adds, crate::storage::ids::ARRAY_BYTES)
        })
        .await)
    }
}
