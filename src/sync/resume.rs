//! Stage 1, resuming: an interrupted run's plan finished exactly before this run's change,
//! and a plan's target membership rebuilt from its base and its lists.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use tracing::info;

use super::Run;
use super::deliver::Sent;
use crate::cohort::diff;
use crate::deliver::sender::Sender;
use crate::destinations::Delivery;
use crate::error::{Error, Result};
use crate::parallel::on_rayon;
use crate::state::dead;
use crate::state::{PlanMeta, Pointer, ids};

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
            // Everything the commit will need must be readable before anything is sent.
            dead::pending(self.state).await?;
            let sent = self.deliver(&plan, delivery, sender, None).await?;
            return Ok(Some(self.commit(&plan, sent).await?));
        }
        Ok(None)
    }

    /// A crash came before the target snapshot was written: it is `(base − removes) ∪ adds`,
    /// and the base is still there (it is only deleted after the pointer moves past it).
    pub(super) async fn rebuild_target(&self, plan: &PlanMeta) -> Result<()> {
        let target = self.target_of(plan).await?;
        let store = self.state.store.as_ref();
        ids::write(store, &self.state.path(&plan.target_snapshot), target).await
    }

    /// The membership once `plan` is delivered, rebuilt from its base and its lists.
    pub(super) async fn target_of(&self, plan: &PlanMeta) -> Result<Arc<StringArray>> {
        let base = match &plan.base_run_id {
            None => Arc::new(StringArray::from(Vec::<&str>::new())),
            Some(run) => {
                let pointer = self.state.pointer().await?;
                match pointer {
                    Some(p) if &p.run_id == run => self.state.snapshot(Some(&p)).await?,
                    _ => {
                        return Err(Error::config(
                            None,
                            format!(
                                "{}: the unfinished run's base snapshot (run {run}) is no longer \
                                 the committed one, so its target cannot be rebuilt; nothing was \
                                 committed. Run {} (it sets the unfinished run aside and makes \
                                 the next sync re-send everything and remove what left)",
                                self.state.dir,
                                self.state.fix("repair")
                            ),
                        ));
                    }
                }
            }
        };
        let adds = self.state.ids(&plan.adds_file).await?;
        let removes = self.state.ids(&plan.removes_file).await?;
        Ok(on_rayon(move || {
            let kept = diff::diff(&removes, &base).adds;
            Arc::new(diff::union(&kept, &adds))
        })
        .await)
    }
}
