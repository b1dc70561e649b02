-- Benchmark cohort: every user but a 1% slice that moves with the run's day, so consecutive
-- days differ by ~1% adds and ~1% removes (the hourly-churn shape of issue 3's benchmark).
SELECT user_id
FROM users
WHERE (CAST(substr(user_id, 2) AS BIGINT) + CAST(date_part('day', $run_date) AS BIGINT)) % 100 <> 0
