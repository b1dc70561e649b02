//! `state unlock`: release a cohort's lock whose run is gone, or any lock with `--force`.

use chrono::Utc;
use serde_json::{Value, json};

use super::lock;
use super::target::Target;
use crate::error::{Error, Result};

/// `state unlock`: releases a lock whose run is gone (expired, or a process of this host that
/// no longer runs), or any lock with `--force`. Releasing writes the next lock generation as a
/// tombstone, so the run that held the lock is fenced off: if it is only stalled, it starts no
/// further request when it wakes, commits nothing and exits 5 (see `lock`).
///
/// Returns what `state unlock` prints.
pub async fn unlock(t: &Target, name: &str, force: bool) -> Result<Value> {
    let state = &t.state;
    let live_released;
    let released = match lock::newest(state).await? {
        None => {
            return Ok(json!({"cohort": name, "outcome": "not_locked"}));
        }
        Some((_, Ok(info))) if info.released.is_some() => {
            return Ok(json!({"cohort": name, "outcome": "not_locked"}));
        }
        Some((path, Ok(info))) => {
            let live = info.expires_at > Utc::now();
            let gone = live && lock::owner_gone(&info.owner);
            if live && !gone && !force {
                return Err(Error::Locked(format!(
                    "{path}: {} holds this cohort (run {}) until {}; the lock is live. Wait for \
                     it, or if you are sure that run is dead, run {} (the run is then fenced \
                     off: it starts no further request and commits nothing; requests it already \
                     had in flight may still reach the partner, and the next sync sends their \
                     batches again)",
                    info.owner,
                    info.run_id,
                    info.expires_at,
                    state.fix("unlock --force")
                )));
            }
            live_released = live && !gone;
            if live && !gone {
                tracing::warn!(cohort = %name, owner = %info.owner, run = %info.run_id,
                    "--force: releasing a live lock; its run is fenced off from now on");
            }
            json!({"file": path.to_string(), "owner": info.owner, "run_id": info.run_id,
                "expires_at": info.expires_at, "live": live, "owner_gone": gone})
        }
        Some((path, Err(why))) => {
            // Whether its run is alive is unknown: drain as for a live one.
            live_released = true;
            if !force {
                return Err(Error::config(
                    None,
                    format!(
                        "lock file {path} is unreadable ({why}), so whether its run is alive is \
                         unknown. If no run of this cohort is going on, run {}",
                        state.fix("unlock --force")
                    ),
                ));
            }
            json!({"file": path.to_string(), "error": why})
        }
    };
    let by = if force {
        "state unlock --force"
    } else {
        "state unlock"
    };
    // A live run's requests in flight are answered before the next run may send: it notices
    // the release within its check interval, and each request ends within request_timeout.
    let drain = if live_released {
        let ttl = t.config.state.lock_ttl;
        let timeout = t
            .config
            .destination(&t.cohort.destination)
            .map(|d| d.delivery.request_timeout)
            .unwrap_or(std::time::Duration::from_secs(30));
        lock::check_every(ttl) + timeout + std::time::Duration::from_secs(1)
    } else {
        std::time::Duration::ZERO
    };
    let generation = lock::unlock(state, by, drain).await?;
    tracing::warn!(cohort = %name, generation, "lock released by `state unlock`");
    Ok(
        json!({"cohort": name, "outcome": "unlocked", "released": released,
        "fence_generation": generation}),
    )
}
