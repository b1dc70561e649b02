-- Benchmark cohort (benches/e2e.py) for a lake of UUID ids (`generate --ids uuid`, the default):
-- half of the users, chosen by the id's last four hex digits (`(ascii(c) - 48) % 39` is a hex
-- digit's value) and a slice that moves with the run's day, so each day 0.5% of all users leave
-- and 0.5% join (1% churn of the cohort each way). Runs the same in DataFusion and DuckDB (the
-- peer).
SELECT user_id
FROM users
WHERE ((ascii(substr(user_id, 36, 1)) - 48) % 39
       + 16 * ((ascii(substr(user_id, 35, 1)) - 48) % 39)
       + 256 * ((ascii(substr(user_id, 34, 1)) - 48) % 39)
       + 4096 * ((ascii(substr(user_id, 33, 1)) - 48) % 39)
       + CAST(date_part('day', $run_date) AS BIGINT)) % 200 < 100
