-- Benchmark cohort (benches/e2e.py) for the lake of sorted ids `u000000000`… (`generate --ids
-- sorted`): half of the users, chosen by a slice of the id that moves
-- with the run's day, so each day 0.5% of all users leave and 0.5% join (1% churn of the
-- cohort each way).
SELECT user_id
FROM users
WHERE (CAST(substr(user_id, 2) AS BIGINT) + CAST(date_part('day', $run_date) AS BIGINT)) % 200 < 100
