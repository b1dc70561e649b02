//! One lock per cohort and destination, in the object store, using only what every store has:
//! create-if-absent. Locks are numbered files `lock-<generation>.json`; the highest generation is
//! the lock. Taking over a dead run's lock (expired) means creating the next generation, which
//! only one contender can do. The holder refreshes its expiry while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{CohortState, Read, delete_if_exists, try_read_json};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub owner: String,
    pub run_id: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A held lock. Release it with [`Lock::release`]; if the process dies it expires.
pub struct Lock {
    state: CohortState,
    generation: u64,
    info: LockInfo,
    ttl: Duration,
}

pub fn lock_name(generation: u64) -> String {
    format!("lock-{generation:010}.json")
}

pub async fn generations(state: &CohortState) -> Result<Vec<u64>> {
    let listed = state.store.list_with_delimiter(Some(&state.dir)).await?;
    let mut gens: Vec<u64> = listed
        .objects
        .iter()
        .filter_map(|m| m.location.filename())
        .filter_map(|f| f.strip_prefix("lock-")?.strip_suffix(".json")?.parse().ok())
        .collect();
    gens.sort_unstable();
    Ok(gens)
}

/// Reads a lock file; an unreadable one stops everything (exit 2) naming
/// `state unlock --force` (its expiry cannot be known).
async fn read_lock(state: &CohortState, path: &Path) -> Result<Option<LockInfo>> {
    match try_read_json::<LockInfo>(state.store.as_ref(), path).await? {
        Read::Ok(info) => Ok(Some(info)),
        Read::Missing => Ok(None),
        Read::Corrupt(why) => Err(Error::config(
            None,
            format!(
                "lock file {path} is unreadable ({why}), so whether a run holds the cohort is \
                 unknown; nothing was sent. If no run of it is going on, run {}",
                state.fix("unlock --force")
            ),
        )),
    }
}

/// The live lock of `state`, if a run holds one now.
pub async fn holder(state: &CohortState) -> Result<Option<LockInfo>> {
    let Some(&g) = generations(state).await?.last() else {
        return Ok(None);
    };
    let held = read_lock(state, &state.path(&lock_name(g))).await?;
    Ok(held.filter(|h| h.expires_at > Utc::now()))
}

/// The newest lock file and what it says (`Err`: unreadable, with why), expired or not.
pub async fn newest(
    state: &CohortState,
) -> Result<Option<(Path, std::result::Result<LockInfo, String>)>> {
    let Some(&g) = generations(state).await?.last() else {
        return Ok(None);
    };
    let path = state.path(&lock_name(g));
    Ok(
        match try_read_json::<LockInfo>(state.store.as_ref(), &path).await? {
            Read::Ok(info) => Some((path, Ok(info))),
            Read::Corrupt(why) => Some((path, Err(why))),
            Read::Missing => None,
        },
    )
}

/// Deletes every lock file of `state`; returns how many there were.
pub async fn remove_all(state: &CohortState) -> Result<usize> {
    let gens = generations(state).await?;
    for g in &gens {
        delete_if_exists(state.store.as_ref(), &state.path(&lock_name(*g))).await?;
    }
    Ok(gens.len())
}

impl Lock {
    /// Takes the lock or fails with [`Error::Locked`] naming the holder and its expiry.
    pub async fn acquire(state: &CohortState, run_id: &str, ttl: Duration) -> Result<Lock> {
        let owner = format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        );
        for _ in 0..5 {
            let gens = generations(state).await?;
            let next = match gens.last() {
                None => 1,
                Some(&g) => {
                    let path = state.path(&lock_name(g));
                    match read_lock(state, &path).await? {
                        Some(held) if held.expires_at > Utc::now() => {
                            return Err(Error::Locked(format!(
                                "{} is being synced by {} (run {}, lock expires {}); \
                                 wait for it, or if you are sure that run is dead, run {}",
                                state.dir,
                                held.owner,
                                held.run_id,
                                held.expires_at,
                                state.fix("unlock --force")
                            )));
                        }
                        Some(held) => {
                            warn!(owner = %held.owner, run = %held.run_id, expired = %held.expires_at,
                                "taking over an expired lock");
                            g + 1
                        }
                        // Released between listing and reading.
                        None => g + 1,
                    }
                }
            };
            let now = Utc::now();
            let info = LockInfo {
                owner: owner.clone(),
                run_id: run_id.to_string(),
                acquired_at: now,
                expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            };
            let body =
                serde_json::to_vec_pretty(&info).map_err(|e| Error::Internal(e.to_string()))?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match state
                .store
                .put_opts(&state.path(&lock_name(next)), body.into(), opts)
                .await
            {
                Ok(_) => {
                    return Ok(Lock {
                        state: state.clone(),
                        generation: next,
                        info,
                        ttl,
                    });
                }
                // Someone else created that generation first: look again.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => {
                    return Err(Error::storage_at(
                        format!("{}: cannot take the lock", state.dir),
                        e,
                    ));
                }
            }
        }
        Err(Error::Locked(format!(
            "{}: the lock is contended; try again (see {})",
            state.dir,
            state.fix("show")
        )))
    }

    fn path(&self) -> Path {
        self.state.path(&lock_name(self.generation))
    }

    /// Extends the expiry; fails if another run has taken the lock over meanwhile.
    pub async fn refresh(&mut self) -> Result<()> {
        self.verify().await?;
        self.info.expires_at =
            Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let body =
            serde_json::to_vec_pretty(&self.info).map_err(|e| Error::Internal(e.to_string()))?;
        self.state.store.put(&self.path(), body.into()).await?;
        Ok(())
    }

    /// Fails if a later generation exists (our lock expired and was taken over).
    pub async fn verify(&self) -> Result<()> {
        match generations(&self.state).await?.last() {
            Some(&g) if g > self.generation => Err(Error::Locked(format!(
                "{}: this run's lock expired and was taken over by another run; stopping without committing",
                self.state.dir
            ))),
            _ => Ok(()),
        }
    }

    /// Deletes this lock and any older generations.
    pub async fn release(self) -> Result<()> {
        for g in generations(&self.state).await? {
            if g <= self.generation {
                delete_if_exists(self.state.store.as_ref(), &self.state.path(&lock_name(g)))
                    .await?;
            }
        }
        Ok(())
    }
}

/// A lock refreshed in the background every `ttl / 3`; `lost()` tells whether another run
/// took it over (then this run must not commit).
pub struct KeptLock {
    task: tokio::task::JoinHandle<Lock>,
    stop: tokio::sync::oneshot::Sender<()>,
    lost: Arc<AtomicBool>,
}

pub fn keep_alive(mut lock: Lock) -> KeptLock {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let lost = Arc::new(AtomicBool::new(false));
    let flag = lost.clone();
    let every = (lock.ttl / 3).max(Duration::from_millis(100));
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return lock,
                _ = tokio::time::sleep(every) => {
                    match lock.refresh().await {
                        Ok(()) => {}
                        Err(e @ Error::Locked(_)) => {
                            warn!(error = %e, "this run's lock was taken over");
                            flag.store(true, Ordering::SeqCst);
                        }
                        Err(e) => warn!(error = %e, "cannot refresh the run lock"),
                    }
                }
            }
        }
    });
    KeptLock { task, stop, lost }
}

impl KeptLock {
    /// Fails if a refresh found the lock taken over by another run.
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Locked(
                "this run's lock expired and was taken over by another run; stopping without committing".into(),
            ));
        }
        Ok(())
    }

    /// Stops refreshing and releases the lock.
    pub async fn release(self) -> Result<()> {
        let _ = self.stop.send(());
        let lock = self
            .task
            .await
            .map_err(|e| Error::Internal(format!("lock keeper: {e}")))?;
        lock.release().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn state() -> CohortState {
        CohortState::new(
            Arc::new(InMemory::new()),
            &Path::from("_cohort_bridge"),
            "braze",
            "c1",
        )
    }

    #[tokio::test]
    async fn second_holder_is_refused_until_release() {
        let s = state();
        let a = Lock::acquire(&s, "run-a", Duration::from_secs(60))
            .await
            .unwrap();
        let err = Lock::acquire(&s, "run-b", Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::Locked(ref m) if m.contains("run-a")),
            "{err}"
        );
        a.release().await.unwrap();
        let b = Lock::acquire(&s, "run-b", Duration::from_secs(60))
            .await
            .unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lock_is_taken_over_once() {
        let s = state();
        let dead = Lock::acquire(&s, "dead", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = Lock::acquire(&s, "b", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            Lock::acquire(&s, "c", Duration::from_secs(60))
                .await
                .is_err()
        );
        assert!(
            dead.verify().await.is_err(),
            "the dead run learns it lost the lock"
        );
        b.verify().await.unwrap();
        b.release().await.unwrap();
        assert!(generations(&s).await.unwrap().is_empty());
    }
}
