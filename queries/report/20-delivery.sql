-- title: Delivery per run
-- about: Requests (retries included), retried requests and dead letters of every sync, failed ones too.
-- chart: timeline group=cohort x=run_at series=requests,retries,dead_letters
SELECT cohort, run_at, outcome, requests, retries, dead_letters,
       ROUND(date_part('epoch', ended_at) - date_part('epoch', started_at), 2) AS seconds
FROM runs
WHERE command LIKE 'sync%' AND run_at >= $since
ORDER BY cohort, run_at, ended_at
