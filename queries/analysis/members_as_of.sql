-- Who was in each cohort, as the partner held it, at the --at time: from `cohort_changes`
-- (every committed sync's adds and removes), each id's last change committed by then.
-- Held-out members (ops `held_out`, `held_out_left`) were never at the partner: see lift.sql.
-- `cohort-bridge query -f queries/analysis/members_as_of.sql --at 2026-11-28T09:00:00Z`
-- (add `WHERE cohort = '...'` below for one cohort; `count(*)` for sizes over time).
-- `cohort` is the cohort's name in the project file, `cohort_id` the partner's id.
SELECT destination, cohort, cohort_id, user_id
FROM (
  SELECT destination, cohort, cohort_id, user_id, op,
         row_number() OVER (
           PARTITION BY destination, cohort_id, user_id
           ORDER BY committed_at_ms DESC
         ) AS latest
  FROM cohort_changes
  WHERE committed_at_ms <= CAST(date_part('epoch', $run_ts) * 1000 AS BIGINT)
    AND op IN ('add', 'remove')
) AS changes
WHERE latest = 1 AND op = 'add'
ORDER BY destination, cohort_id, user_id
