-- Benchmark cohort (benches/e2e.py) for a lake of short ids in no order (`u` + 10 digits,
-- written by DuckDB: `short_ids_lake.py`): half of the users, chosen by the id's last four
-- digits and a slice that moves with the run's day, so each day 0.5% of all users leave and 0.5%
-- join (1% churn of the cohort each way). Runs the same in DataFusion and DuckDB (the peer).
SELECT user_id
FROM users
WHERE (CAST(substr(user_id, 8, 4) AS BIGINT) + CAST(date_part('day', $run_date) AS BIGINT)) % 200 < 100
