//! Cohorts (name, append-only change log folded lazily into a member set) and request counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::Stats;
use super::faults::lock;

/// One accepted change: ids (already prefixed for devices and aliases) to add or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) remove: bool,
    pub(crate) ids: Vec<String>,
}

/// What creating or naming a cohort did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    Created,
    Renamed,
    Unchanged,
}

/// A read-only view of one cohort, after folding its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CohortView {
    pub(crate) cohort_id: String,
    pub(crate) name: String,
    pub(crate) members: Vec<String>,
}

#[derive(Debug, Default)]
struct CohortInner {
    name: String,
    /// Changes accepted since the last fold, in arrival order.
    log: Vec<Change>,
    members: HashSet<String>,
    redundant_adds: u64,
    redundant_removes: u64,
}

impl CohortInner {
    /// Applies the pending log to the member set, counting no-op adds and removes.
    fn fold(&mut self) {
        for change in std::mem::take(&mut self.log) {
            if change.remove {
                for id in &change.ids {
                    if !self.members.remove(id) {
                        self.redundant_removes += 1;
                    }
                }
            } else {
                for id in change.ids {
                    if !self.members.insert(id) {
                        self.redundant_adds += 1;
                    }
                }
            }
        }
    }

    fn sorted_members(&self) -> Vec<String> {
        let mut members: Vec<String> = self.members.iter().cloned().collect();
        members.sort_unstable();
        members
    }
}

type Cohort = Arc<Mutex<CohortInner>>;

/// Counters updated on the request path without a lock.
#[derive(Debug)]
struct Counters {
    requests: AtomicU64,
    /// Index = HTTP status code (100..=599).
    by_status: Box<[AtomicU64]>,
    dropped_connections: AtomicU64,
    cohorts_created: AtomicU64,
    cohorts_renamed: AtomicU64,
    user_requests_applied: AtomicU64,
    ids_added: AtomicU64,
    ids_removed: AtomicU64,
    max_ids_per_request: AtomicU64,
    rate_limited: AtomicU64,
    track_requests_applied: AtomicU64,
    track_objects_applied: AtomicU64,
}

const STATUS_SLOTS: usize = 600;

impl Default for Counters {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            dropped_connections: AtomicU64::new(0),
            cohorts_created: AtomicU64::new(0),
            cohorts_renamed: AtomicU64::new(0),
            user_requests_applied: AtomicU64::new(0),
            ids_added: AtomicU64::new(0),
            ids_removed: AtomicU64::new(0),
            max_ids_per_request: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            track_requests_applied: AtomicU64::new(0),
            track_objects_applied: AtomicU64::new(0),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// All of the emulator's mutable state: the workspace's cohorts and the counters.
#[derive(Debug, Default)]
pub(crate) struct State {
    cohorts: RwLock<HashMap<String, Cohort>>,
    counters: Counters,
}

impl State {
    fn cohort(&self, cohort_id: &str) -> Option<Cohort> {
        let map = self
            .cohorts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(cohort_id).cloned()
    }

    fn all_cohorts(&self) -> Vec<(String, Cohort)> {
        let map = self
            .cohorts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .map(|(id, c)| (id.clone(), Arc::clone(c)))
            .collect()
    }

    /// Creates the cohort, or renames it when `name` differs.
    pub(crate) fn upsert_cohort(&self, cohort_id: &str, name: &str) -> Upsert {
        let outcome = self.upsert_inner(cohort_id, name);
        match outcome {
            Upsert::Created => bump(&self.counters.cohorts_created, 1),
            Upsert::Renamed => bump(&self.counters.cohorts_renamed, 1),
            Upsert::Unchanged => {}
        }
        outcome
    }

    fn upsert_inner(&self, cohort_id: &str, name: &str) -> Upsert {
        if let Some(cohort) = self.cohort(cohort_id) {
            return rename(&cohort, name);
        }
        let mut map = self
            .cohorts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cohort) = map.get(cohort_id) {
            return rename(cohort, name);
        }
        let inner = CohortInner {
            name: name.to_owned(),
            ..CohortInner::default()
        };
        map.insert(cohort_id.to_owned(), Arc::new(Mutex::new(inner)));
        Upsert::Created
    }

    /// Appends one request's changes to the cohort's log. `false` when the cohort does not exist.
    pub(crate) fn append_changes(&self, cohort_id: &str, changes: Vec<Change>) -> bool {
        let Some(cohort) = self.cohort(cohort_id) else {
            return false;
        };
        let (mut added, mut removed) = (0u64, 0u64);
        for change in &changes {
            let n = change.ids.len() as u64;
            if change.remove {
                removed += n
            } else {
                added += n
            }
        }
        lock(&cohort).log.extend(changes);
        bump(&self.counters.user_requests_applied, 1);
        bump(&self.counters.ids_added, added);
        bump(&self.counters.ids_removed, removed);
        true
    }

    /// Current members, sorted; `None` if the cohort was never created.
    pub(crate) fn members(&self, cohort_id: &str) -> Option<Vec<String>> {
        self.view(cohort_id).map(|v| v.members)
    }

    pub(crate) fn cohort_name(&self, cohort_id: &str) -> Option<String> {
        let cohort = self.cohort(cohort_id)?;
        let name = lock(&cohort).name.clone();
        Some(name)
    }

    /// The cohort's name and sorted members, folding its pending log first.
    pub(crate) fn view(&self, cohort_id: &str) -> Option<CohortView> {
        let cohort = self.cohort(cohort_id)?;
        let mut inner = lock(&cohort);
        inner.fold();
        Some(CohortView {
            cohort_id: cohort_id.to_owned(),
            name: inner.name.clone(),
            members: inner.sorted_members(),
        })
    }

    /// Every cohort as `(cohort_id, name, member count)`, sorted by id, after folding.
    pub(crate) fn summaries(&self) -> Vec<(String, String, usize)> {
        let mut out: Vec<_> = self
            .all_cohorts()
            .into_iter()
            .map(|(id, cohort)| {
                let mut inner = lock(&cohort);
                inner.fold();
                (id, inner.name.clone(), inner.members.len())
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) fn record_request(&self) {
        bump(&self.counters.requests, 1);
    }

    pub(crate) fn record_status(&self, status: u16) {
        if let Some(slot) = self.counters.by_status.get(usize::from(status)) {
            bump(slot, 1);
        }
    }

    pub(crate) fn record_dropped(&self) {
        bump(&self.counters.dropped_connections, 1);
    }

    pub(crate) fn record_track(&self, objects: u64) {
        bump(&self.counters.track_requests_applied, 1);
        bump(&self.counters.track_objects_applied, objects);
    }

    pub(crate) fn record_rate_limited(&self) {
        bump(&self.counters.rate_limited, 1);
    }

    pub(crate) fn record_id_count(&self, ids: u64) {
        self.counters
            .max_ids_per_request
            .fetch_max(ids, Ordering::Relaxed);
    }

    /// A snapshot of the counters; folds every cohort's log to count redundant changes.
    pub(crate) fn stats(&self) -> Stats {
        let (mut redundant_adds, mut redundant_removes) = (0, 0);
        for (_, cohort) in self.all_cohorts() {
            let mut inner = lock(&cohort);
            inner.fold();
            redundant_adds += inner.redundant_adds;
            redundant_removes += inner.redundant_removes;
        }
        let c = &self.counters;
        Stats {
            requests: read(&c.requests),
            by_status: status_map(&c.by_status),
            dropped_connections: read(&c.dropped_connections),
            cohorts_created: read(&c.cohorts_created),
            cohorts_renamed: read(&c.cohorts_renamed),
            user_requests_applied: read(&c.user_requests_applied),
            ids_added: read(&c.ids_added),
            ids_removed: read(&c.ids_removed),
            redundant_adds,
            redundant_removes,
            max_ids_per_request: read(&c.max_ids_per_request),
            rate_limited: read(&c.rate_limited),
            track_requests_applied: read(&c.track_requests_applied),
            track_objects_applied: read(&c.track_objects_applied),
        }
    }
}

fn rename(cohort: &Mutex<CohortInner>, name: &str) -> Upsert {
    let mut inner = lock(cohort);
    if inner.name == name {
        return Upsert::Unchanged;
    }
    inner.name = name.to_owned();
    Upsert::Renamed
}

fn status_map(slots: &[AtomicU64]) -> BTreeMap<u16, u64> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(code, n)| {
            let n = read(n);
            let code = u16::try_from(code).ok()?;
            (n > 0).then_some((code, n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(remove: bool, ids: &[&str]) -> Change {
        Change {
            remove,
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn upsert_creates_renames_and_ignores_same_name() {
        let state = State::default();
        assert_eq!(state.upsert_cohort("c1", "One"), Upsert::Created);
        assert_eq!(state.upsert_cohort("c1", "One"), Upsert::Unchanged);
        assert_eq!(state.upsert_cohort("c1", "Uno"), Upsert::Renamed);
        assert_eq!(state.cohort_name("c1").as_deref(), Some("Uno"));
        let stats = state.stats();
        assert_eq!((stats.cohorts_created, stats.cohorts_renamed), (1, 1));
        assert_eq!(state.members("c1"), Some(vec![]));
        assert_eq!(state.members("nope"), None);
    }

    #[test]
    fn fold_applies_in_order_and_counts_redundancy() {
        let state = State::default();
        assert!(!state.append_changes("c1", vec![change(false, &["a"])]));
        state.upsert_cohort("c1", "One");
        assert!(state.append_changes("c1", vec![change(false, &["b", "a", "a"])]));
        assert!(state.append_changes(
            "c1",
            vec![change(true, &["a", "zz"]), change(false, &["c"])]
        ));
        assert!(state.append_changes("c1", vec![change(false, &["b"])]));
        assert_eq!(
            state.members("c1"),
            Some(vec!["b".to_owned(), "c".to_owned()])
        );
        let stats = state.stats();
        assert_eq!(stats.user_requests_applied, 3);
        assert_eq!((stats.ids_added, stats.ids_removed), (5, 2));
        assert_eq!((stats.redundant_adds, stats.redundant_removes), (2, 1));
        assert_eq!(
            state.summaries(),
            vec![("c1".to_owned(), "One".to_owned(), 2)]
        );
    }

    #[test]
    fn status_counts_are_reported() {
        let state = State::default();
        state.record_status(201);
        state.record_status(201);
        state.record_status(429);
        state.record_id_count(10);
        state.record_id_count(3);
        let stats = state.stats();
        assert_eq!(stats.by_status, BTreeMap::from([(201, 2), (429, 1)]));
        assert_eq!(stats.max_ids_per_request, 10);
    }
}
