-- Everyone seen in the 30 days before the run (about half the users): the large cohort the
-- benchmarks sync.
SELECT user_id
FROM users
WHERE last_seen_at >= $run_ts - INTERVAL '30 days'
  AND last_seen_at < $run_ts
