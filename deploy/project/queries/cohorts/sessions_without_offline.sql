-- Users who started a session in the 14 days before the run but never used offline mode
-- in the lake's history: the audience for a "works on the plane, too" push.
-- Filtering on event_date (the hive partition) means only 14 days of files are read.
SELECT DISTINCT s.user_id
FROM events AS s
WHERE s.event_name = 'session_start'
  AND s.event_date >= $run_date - INTERVAL '14 days'
  AND s.event_date < $run_date
  AND NOT EXISTS (
    SELECT 1
    FROM events AS f
    WHERE f.user_id = s.user_id
      AND f.event_name = 'feature_used'
      AND f.feature = 'offline_mode'
  )
