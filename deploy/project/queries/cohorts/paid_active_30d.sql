-- Paid users (basic or pro plan) seen in the 30 days before the run.
-- $run_ts is the run's logical time (sync --at), UTC.
SELECT user_id
FROM users
WHERE plan IN ('basic', 'pro')
  AND last_seen_at >= $run_ts - INTERVAL '30 days'
  AND last_seen_at < $run_ts
