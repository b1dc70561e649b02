//! Stage 7, the control group: who entered and left it, recorded after the partner's part is
//! committed (nothing here reaches the partner).

use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Array, StringArray};
use tracing::warn;

use super::Run;
use crate::cohort::diff;
use crate::error::Result;
use crate::parallel::on_rayon;
use crate::state::{self, ids, paths};

impl Run<'_> {
    /// Records who entered and who left the control group since the last run in
    /// `cohort_changes` (`held_out`, `held_out_left`), then keeps the group as
    /// `holdout/held.parquet` (`paths::HOLDOUT`) in this run's state. Nothing here reaches the
    /// partner, so it runs after the partner's part is committed; a run that dies between the
    /// history and the file records the same change again on the next run (same ops, a later
    /// `committed_at_ms`: "the latest op" answers the same). An unreadable file is logged and
    /// the whole group is recorded again.
    pub(super) async fn record_holdout(&self, held: Arc<StringArray>) -> Result<()> {
        let store = self.state.store.as_ref();
        let path = self.state.path(paths::HOLDOUT);
        let before = match ids::try_read(&self.state.store, &path).await? {
            Ok(ids) => ids,
            Err(why) => {
                if why != "missing" {
                    warn!(cohort = %self.cohort.name, file = %path, %why,
                        "the holdout list is unreadable: recording the whole holdout again");
                }
                Arc::new(StringArray::from(Vec::<&str>::new()))
            }
        };
        if before.is_empty() && held.is_empty() {
            return Ok(());
        }
        let (now, was) = (held.clone(), before);
        let d = on_rayon(move || diff::diff(&was, &now)).await;
        if d.adds.is_empty() && d.removes.is_empty() {
            return Ok(());
        }
        self.hold().await?;
        let dir = state::history::run_dir(
            &self.history,
            &self.cohort.destination,
            &self.cohort.cohort_id,
            self.options.at,
            Utc::now(),
        );
        for (op, list) in [("held_out", d.adds), ("held_out_left", d.removes)] {
            if !list.is_empty() {
                ids::write(store, &state::history::file(&dir, op), Arc::new(list)).await?;
            }
        }
        if held.is_empty() {
            state::delete_if_exists(store, &path).await
        } else {
            ids::write(store, &path, held).await
        }
    }
}
