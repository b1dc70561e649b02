//! The names of the objects in a cohort's (or a shard's) state folder, relative to it
//! (`CohortState::path` makes them absolute; the layout is drawn in the `state` module docs).
//! They are the on-disk format: a name changed here strands the state of earlier releases.

/// The commit pointer: which snapshot (and deltas) the partner holds.
pub const POINTER: &str = "current.json";

/// An unfinished run's plan (present ⇔ a run must be resumed).
pub const PLAN: &str = "pending/plan.json";

/// An incremental plan's ids to add, when they are not a delta's (a first sync's adds are its
/// target snapshot).
pub const PENDING_ADDS: &str = "pending/adds.parquet";

/// A plan's ids to remove, when they are not a delta's.
pub const PENDING_REMOVES: &str = "pending/removes.parquet";

/// The folder of the parts of open plans (`PlanMeta::open`).
pub const PARTS: &str = "pending/parts";

/// The folder of the parts of run `run_id`'s open plan: each the adds of one part (a part a
/// fenced-off run wrote late is never taken for another run's).
pub fn parts(run_id: &str) -> String {
    format!("{PARTS}/{run_id}")
}

/// Part `k` of run `run_id`'s open plan (numbered from 0, in the order of the ids).
pub fn part(run_id: &str, k: usize) -> String {
    format!("{}/{k:06}.parquet", parts(run_id))
}

/// The folder of the journal of acknowledged batches.
pub const JOURNAL: &str = "pending/journal";

/// The folder of the marks of runs whose snapshot was written before their plan (not committed
/// until the pointer names it).
pub const STARTED: &str = "pending/started";

/// Where the control group (the cohort's `holdout`) is kept between runs.
pub const HOLDOUT: &str = "holdout/held.parquet";

/// The folder of dead letters not yet given their run's file.
pub const DEAD_PENDING: &str = "pending/dead";

/// The folder of every run's dead letters.
pub const DEAD_LETTERS: &str = "dead_letters";

/// The dead letters of run `run_id`.
pub fn dead_letters(run_id: &str) -> String {
    format!("{DEAD_LETTERS}/{run_id}.parquet")
}

/// The ids run `run_id` added to the snapshot before it (a delta).
pub fn delta_adds(run_id: &str) -> String {
    format!("snapshots/{run_id}.adds.parquet")
}

/// The ids run `run_id` removed from the snapshot before it (a delta).
pub fn delta_removes(run_id: &str) -> String {
    format!("snapshots/{run_id}.removes.parquet")
}

/// The full snapshot of run `run_id`.
pub fn snapshot(run_id: &str) -> String {
    format!("snapshots/{run_id}.parquet")
}

/// The mark of run `run_id` under [`STARTED`].
pub fn started(run_id: &str) -> String {
    format!("{STARTED}/{run_id}")
}

/// The pointer of run `run_id` set aside by `sync --new-workspace`.
pub fn replaced_pointer(run_id: &str) -> String {
    format!("replaced/{run_id}.json")
}

/// The membership of the pointer set aside by `sync --new-workspace` (its deltas applied).
pub fn replaced_snapshot(run_id: &str) -> String {
    format!("replaced/{run_id}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_paths_keep_their_names() {
        assert_eq!(snapshot("r1"), "snapshots/r1.parquet");
        assert_eq!(started("r1"), "pending/started/r1");
        assert_eq!(replaced_pointer("r1"), "replaced/r1.json");
        assert_eq!(replaced_snapshot("r1"), "replaced/r1.parquet");
    }
}
