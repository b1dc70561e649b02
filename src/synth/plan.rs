//! The files to write: one task per users file and per events file of each day, with its row
//! count (file-size [`Limits`]) and its path.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use object_store::path::Path;

use super::rng::{Rng, TAG_DAY, date_key};
use super::{EVENTS_PER_FILE, SynthSpec, USERS_PER_FILE};

/// File-size limits (constants in production; small in tests).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) users_per_file: u64,
    pub(super) events_per_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            users_per_file: USERS_PER_FILE,
            events_per_file: EVENTS_PER_FILE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Users,
    Events,
}

#[derive(Debug, Clone)]
pub(super) enum TaskKind {
    Users {
        start: u64,
        len: u64,
    },
    Events {
        date: NaiveDate,
        file_index: u64,
        len: u64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Task {
    pub(super) path: Path,
    pub(super) kind: TaskKind,
}

fn part_name(i: u64) -> String {
    format!("part-{i:05}.parquet")
}

/// Events on `date`: weekday base, weekends ~20% lower, ±3% deterministic day-to-day jitter.
pub(super) fn events_on(spec: &SynthSpec, date: NaiveDate) -> u64 {
    let base = spec.effective_events_per_day() as f64;
    let weekly = match date.weekday() {
        Weekday::Sat | Weekday::Sun => 0.8,
        _ => 1.0,
    };
    let mut rng = Rng::from_key(spec.seed, &[TAG_DAY, date_key(date)]);
    let jitter = 0.97 + 0.06 * rng.f64();
    (base * weekly * jitter).round() as u64
}

pub(super) fn plan_tasks(root: &Path, spec: &SynthSpec, limits: Limits) -> Vec<Task> {
    let mut tasks = Vec::new();
    let users_dir = root.clone().join("users");
    let mut start = 0;
    let mut i = 0;
    while start < spec.users {
        let len = limits.users_per_file.min(spec.users - start);
        tasks.push(Task {
            path: users_dir.clone().join(part_name(i)),
            kind: TaskKind::Users { start, len },
        });
        start += len;
        i += 1;
    }
    let events_dir = root.clone().join("events");
    let first = spec.start_date();
    for d in 0..spec.days {
        let date = first + Days::new(u64::from(d));
        let total = events_on(spec, date);
        let files = total.div_ceil(limits.events_per_file).max(1);
        let dir = events_dir
            .clone()
            .join(format!("event_date={}", date.format("%Y-%m-%d")));
        for f in 0..files {
            // Even split: the first `total % files` files get one more row.
            let len = total / files + u64::from(f < total % files);
            tasks.push(Task {
                path: dir.clone().join(part_name(f)),
                kind: TaskKind::Events {
                    date,
                    file_index: f,
                    len,
                },
            });
        }
    }
    // Biggest first keeps both cores busy until the end.
    tasks.sort_by_key(|t| std::cmp::Reverse(task_rows(t)));
    tasks
}

fn task_rows(t: &Task) -> u64 {
    match t.kind {
        TaskKind::Users { len, .. } | TaskKind::Events { len, .. } => len,
    }
}
