"""Hourly cohort sync with the queries on a Ballista cluster: every cohort fanned out in shards.

The variant of cohort_bridge_sync.py for a project that has outgrown one machine (README
"Beyond one machine"; deploy/ runs the cluster). For each cohort in COHORTS, a task group
`sync_<cohort>`: the task `shard`, mapped over shards 0..SHARDS-1, runs

    cohort-bridge --engine ballista://HOST:PORT --config P sync COHORT --shard K/N --at T

and `total` adds the shards' summaries up. The cluster runs each shard's query (every shard runs
the whole cohort query and keeps its part: N shards are N queries on the cluster); each shard
delivers its part from the Airflow worker, with its own lock, journal and snapshot, at 1/N of
the partner's rate limit, and fails, retries and resumes alone.

Exit codes, secrets, no catch-up and one run at a time: as cohort_bridge_sync.py (see its
docstring and README.md). Created paused: run this DAG or cohort_bridge_sync, never both on the
same cohorts (their shard layouts differ; README "Changing SHARDS").
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

# The cluster's scheduler: deploy/k8s's Service, or deploy/docker-compose.yml's `scheduler:50050`.
ENGINE = cb.check_engine("ballista://cohort-bridge-scheduler:50050")
COHORTS = ["paid_active_30d", "sessions_without_offline", "active_30d"]
SHARDS = 4  # change it only after an hour in which every shard succeeded (README.md)

DEFAULT_ARGS = dict(cb.SYNC_DEFAULT_ARGS)  # as cohort_bridge_sync.py


@task
def sync_shard(cohort: str, shard: int, shards: int, **context):
    """Shard `shard` of `shards` of a cohort, its query on the cluster."""
    env = cb.secret_env(lambda name: Variable.get(name, None))
    argv = cb.sync_argv(cohort, cb.logical_time(context), shard=(shard, shards), engine=ENGINE)
    return cb.run(argv, env=env, extra={"cohort": cohort, "shard": shard})


@task(retries=0)
def total(cohort: str, shards: int, results):
    """The cohort's totals over its shards (members, adds, removes, requests, ...) in one XCom."""
    totals = cb.shard_totals(cohort, shards, [results[i] for i in range(len(results))])
    cb.log.info("%s", totals)
    return totals


with DAG(
    dag_id="cohort_bridge_sync_cluster",
    description="Hourly sync of SQL cohorts to Braze, queries on a Ballista cluster, in shards",
    schedule="5 * * * *",
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=55),
    tags=["cohort-bridge", "braze", "ballista"],
    doc_md=__doc__,
) as dag:
    for name in COHORTS:
        with TaskGroup(group_id=f"sync_{name}"):
            results = sync_shard.override(task_id="shard").partial(
                cohort=name, shards=SHARDS
            ).expand(shard=list(range(SHARDS)))
            total(name, SHARDS, results)
