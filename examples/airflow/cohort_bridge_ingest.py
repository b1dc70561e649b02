"""Daily ingest of Braze Currents exports into the lake (`partner_events`), with catch-up.

One run per UTC day D: the interval [D 03:00, D+1 03:00) UTC, so the run for day D starts at
D+1 03:00, three hours after the day ended, for late Currents files. `ds` of the run is D.

- The normal daily run (the newest interval): `cohort-bridge ingest --source currents`, an
  incremental ingest of every file not yet read, whatever days its events fall on (late events
  land in their own day).
- A catch-up run (catchup=True: the DAG was paused or is deployed with an earlier start_date),
  an `airflow dags backfill` / `airflow backfill create` run, or an old run cleared to redo its
  day: `cohort-bridge ingest --source currents --from D --to D`, which replaces day D with
  exactly the events of every file that can hold them. Rerunning it yields the same day.
- A manual trigger with params `from` and `to`: one backfill of those days (cheaper than one
  run per day for long ranges: each backfill re-reads the files queued from its first day on).
- Exit codes: 1 and 5 retry; 2 and 4 fail at once (AirflowFailException); 3 (some input
  quarantined, the rest landed) succeeds with a warning and `partial: true` in the XCom.

One run at a time: `ingest` has no lock of its own, two at once on one source would race.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.7+
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.param import Param
try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:
    from airflow.timetables.interval import CronDataIntervalTimetable

import cohort_bridge_runner as cb

SOURCE = "currents"

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=15),
    # A killed ingest resumes from its last checkpoint at the next try.
    "execution_timeout": timedelta(hours=4),
}


@task(max_active_tis_per_dag=1)
def ingest(source: str, **context):
    dag_run = context["dag_run"]
    date_range = cb.ingest_range(
        interval_start=context["data_interval_start"],
        interval_end=context["data_interval_end"],
        run_type=dag_run.run_type,
        now=datetime.now(timezone.utc),
        params=context.get("params"),
    )
    mode = "incremental" if date_range is None else f"backfill {date_range[0]}..{date_range[1]}"
    cb.log.info("%s: %s", source, mode)
    return cb.run(cb.ingest_argv(source, date_range), extra={"source": source, "mode": mode})


with DAG(
    dag_id="cohort_bridge_ingest",
    description="Daily ingest of Braze Currents events into the lake, with catch-up",
    # Explicit data intervals: Airflow 3 turns a cron string into a trigger timetable
    # (data_interval_start == data_interval_end), which would make `ds` the day just begun.
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, 3, tzinfo=timezone.utc),
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "from": Param(None, type=["null", "string"], format="date",
                      description="Manual backfill: first event_date (with `to`)"),
        "to": Param(None, type=["null", "string"], format="date",
                    description="Manual backfill: last event_date, inclusive"),
    },
    tags=["cohort-bridge", "braze"],
    doc_md=__doc__,
) as dag:
    ingest.override(task_id=f"ingest_{SOURCE}")(SOURCE)
