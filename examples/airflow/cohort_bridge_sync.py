"""Hourly cohort sync: `cohort-bridge sync` per cohort, as of the slot's `data_interval_end`.

- A task per cohort in COHORTS.
- For each big cohort in SHARDED_COHORTS a task group `sync_<cohort>`: the task `shard`, mapped
  over shards 0..SHARDS-1 (`cohort-bridge sync C --shard K/N --at T`: shard K delivers the
  members whose stable hash of user_id mod N is K, with its own lock, journal and snapshot, at
  1/N of the partner rate limit), then `total`, which adds the shards' summaries up.
- Exit codes decide: 1 and 5 retry; 2 and 4 fail at once (AirflowFailException: a human must
  fix the config or the keys); 3 (some ids dead-lettered, the rest committed) succeeds with a
  warning. See cohort_bridge_runner.py.
- No catch-up, one run at a time: a sync sends the difference between the cohort as of `--at`
  and what the partner holds now, so running an old slot after a newer one would move the
  partner back in time until the next hour. A retried slot computes the same cohort as before.
- Secrets come from the Airflow Variables braze_partner_api_key and braze_client_secret (or
  the worker's environment), fetched when the task runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG, TaskGroup, Variable, task
except ImportError:  # Airflow 2.7+
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models import Variable
    from airflow.utils.task_group import TaskGroup

import cohort_bridge_runner as cb

COHORTS = ["paid_active_30d", "sessions_without_offline"]
SHARDED_COHORTS = ["active_30d"]
SHARDS = 4  # change it only after an hour in which every shard succeeded (README.md)

DEFAULT_ARGS = dict(cb.SYNC_DEFAULT_ARGS)


def _secrets() -> dict:
    return cb.secret_env(lambda name: Variable.get(name, None))


@task
def sync(cohort: str, **context):
    """One cohort, unsharded."""
    return cb.run(cb.sync_argv(cohort, cb.logical_time(context)), env=_secrets(),
                  extra={"cohort": cohort, "shard": None})


@task
def sync_shard(cohort: str, shard: int, shards: int, **context):
    """Shard `shard` of `shards` of a big cohort; one mapped task instance per shard."""
    return cb.run(cb.sync_argv(cohort, cb.logical_time(context), shard=(shard, shards)), env=_secrets(),
                  extra={"cohort": cohort, "shard": shard})


@task(retries=0)
def total(cohort: str, shards: int, results):
    """The sharded cohort's totals (members, adds, removes, requests, ...) in one XCom."""
    # By index: iterating the lazy XCom sequence logs a "not found" past its end on Airflow 3.
    totals = cb.shard_totals(cohort, shards, [results[i] for i in range(len(results))])
    cb.log.info("%s", totals)
    return totals


with DAG(
    dag_id="cohort_bridge_sync",
    description="Hourly sync of SQL cohorts from the lake to Braze",
    schedule="5 * * * *",
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=55),
    tags=["cohort-bridge", "braze"],
    doc_md=__doc__,
) as dag:
    for name in COHORTS:
        sync.override(task_id=f"sync_{name}")(name)

    for name in SHARDED_COHORTS:
        with TaskGroup(group_id=f"sync_{name}"):
            results = sync_shard.override(task_id="shard").partial(
                cohort=name, shards=SHARDS
            ).expand(shard=list(range(SHARDS)))
            total(name, SHARDS, results)
