"""Hourly cohort sync from Airflow.

Each task passes the slot's logical time (`data_interval_end`) as `--at`, so a retried or
backfilled slot computes the cohort as of its own time. Exit codes (README "Exit codes"):
1 is worth retrying; 2 (configuration) and 4 (partner refused) need a human.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

PROJECT = "/srv/cohorts/cohort-bridge.toml"
COHORTS = ["paid_active_30d", "sessions_without_offline", "active_30d"]

with DAG(
    dag_id="cohort_bridge_hourly",
    schedule="5 * * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=5)},
) as dag:
    for cohort in COHORTS:
        BashOperator(
            task_id=f"sync_{cohort}",
            bash_command=(
                f"cohort-bridge --config {PROJECT} --log-format json "
                f"sync {cohort} --at '{{{{ data_interval_end }}}}'"
            ),
            env={
                "BRAZE_PARTNER_API_KEY": "{{ var.value.braze_partner_api_key }}",
                "BRAZE_CLIENT_SECRET": "{{ var.value.braze_client_secret }}",
            },
            append_env=True,
        )
