//! One lock per target table, so two ingests never write the same table at once.
//!
//! A day's object is rewritten as a whole (merged with what it holds): two runs writing the same
//! table, even from different sources, would each replace the day with their own merge and one
//! run's events would be lost, while each source's manifest says its files were read. The lock
//! is the run lock `sync` uses per cohort (`state::lock`: create-if-absent objects, refreshed
//! while the run lives, taken over once expired), kept at `<state>/tables/<table>/`. A second
//! ingest into a locked table does nothing and exits 5 naming the holder and how to release it.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::state::CohortState;
use crate::state::lock::{self, KeptLock, Lock};

/// Where the lock of `table` lives.
fn state_of(lake: &Lake, table: &str) -> (CohortState, String) {
    let rel = format!("tables/{table}");
    (
        CohortState {
            store: lake.state.store.clone(),
            dir: lake.state.child(&rel),
            label: table.to_string(),
        },
        lake.state.child_url(&rel),
    )
}

/// Takes the lock of `table` (refreshed in the background until released) or fails with
/// [`Error::Locked`] naming the run that holds it.
pub async fn acquire(lake: &Lake, table: &str, run_id: &str, ttl: Duration) -> Result<KeptLock> {
    let (state, url) = state_of(lake, table);
    match Lock::acquire(&state, run_id, ttl).await {
        Ok(held) => Ok(lock::keep_alive(held)),
        Err(Error::Locked(message)) => {
            // The holder, as the lock says (it may have been released meanwhile).
            let holder = match lock::holder(&state).await.ok().flatten() {
                Some(h) => format!(
                    "{} (run {}); if that process is gone, its lock lapses at {} \
                     (`state.lock_ttl` after its last refresh)",
                    h.owner, h.run_id, h.expires_at
                ),
                None => message,
            };
            Err(Error::Locked(format!(
                "table `{table}` is being written by another ingest: {holder}. Nothing was \
                 done: run again once it has finished, or, if it is dead, delete the \
                 lock-*.json objects in {url} to release the table now"
            )))
        }
        // An unreadable lock object: the `state` command is per cohort, so say what to do here.
        Err(Error::Config { .. }) => Err(Error::config(
            None,
            format!(
                "table `{table}`: its lock in {url} is unreadable, so whether an ingest is \
                 writing it is unknown; nothing was done. If none is running, delete the \
                 lock-*.json objects there"
            ),
        )),
        Err(e) => Err(e),
    }
}
