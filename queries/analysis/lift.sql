-- Lift: did the push make members use the feature it pointed to? Per campaign, the members of
-- the cohort it went to who were treated (held by the partner when the campaign's first push
-- went out) against the cohort's held-out members (the control group: `holdout` in the
-- project file; never sent, so never pushed), and the share of each arm that used the feature
-- within `window_hours` of that first send. Intent to treat: every treated member counts,
-- whether or not the push reached them or was opened, so the difference is the campaign's
-- effect, not the openers' enthusiasm.
-- Arms come from `cohort_changes`: each member's last change in the last run whose logical
-- time (`sync --at`) is at or before the first send.
-- The interval is the difference's 95% Wald interval; `z` and `p_value` are the two-proportion
-- z-test (pooled), two-sided, the normal tail by Abramowitz & Stegun 26.2.17 (|error| < 1e-7).
-- Campaigns come from the project file's `[campaigns.<campaign_id>]` sections (cohort,
-- feature, window), read here as the `campaigns` table (campaign_id, cohort, cohort_id,
-- destination, feature, window_hours): add a section for each campaign you run.
-- Kept shallow: a Ballista 55 scheduler refuses a plan nested about 48 operators deep
-- (docs/upstream/ballista-deep-plan-stack.md); this one is 39, so add steps to a CTE rather
-- than another CTE.
WITH windows AS (
  -- Each campaign's first send, and the window after it.
  SELECT t.campaign_id, t.cohort, t.cohort_id, t.destination, t.feature,
         MIN(p.event_time) AS sent_at,
         MIN(p.event_time) + CAST(concat(CAST(CAST(t.window_hours * 3600 AS BIGINT) AS VARCHAR),
           ' seconds') AS INTERVAL) AS until_ts,
         CAST(date_part('epoch', MIN(p.event_time)) * 1000 AS BIGINT) AS sent_ms
  FROM campaigns t
  JOIN partner_events p ON p.campaign_id = t.campaign_id
  WHERE p.event_type = 'users.messages.pushnotification.Send'
  GROUP BY t.campaign_id, t.cohort, t.cohort_id, t.destination, t.feature, t.window_hours
),
changes AS (
  SELECT w.campaign_id, h.user_id, h.op,
         row_number() OVER (
           PARTITION BY w.campaign_id, h.destination, h.user_id, h.op IN ('add', 'remove')
           ORDER BY h.run_at_ms DESC, h.committed_at_ms DESC
         ) AS latest
  FROM cohort_changes h
  JOIN windows w ON h.destination = w.destination AND h.cohort_id = w.cohort_id
  WHERE h.run_at_ms <= w.sent_ms
),
arms AS (
  SELECT DISTINCT campaign_id, user_id,
         CASE WHEN op = 'add' THEN 'treated' ELSE 'held_out' END AS arm
  FROM changes
  WHERE latest = 1 AND op IN ('add', 'held_out')
),
counts AS (
  -- Each arm's members, and those of them who used the feature within the window.
  SELECT a.campaign_id, w.cohort, w.feature,
         COUNT(DISTINCT CASE WHEN a.arm = 'treated' THEN a.user_id END) AS n_t,
         COUNT(DISTINCT CASE WHEN a.arm = 'treated' AND e.user_id IS NOT NULL THEN a.user_id END)
           AS x_t,
         COUNT(DISTINCT CASE WHEN a.arm = 'held_out' THEN a.user_id END) AS n_h,
         COUNT(DISTINCT CASE WHEN a.arm = 'held_out' AND e.user_id IS NOT NULL THEN a.user_id END)
           AS x_h
  FROM arms a
  JOIN windows w ON w.campaign_id = a.campaign_id
  LEFT JOIN events e
    ON e.user_id = a.user_id
   AND e.event_name = 'feature_used'
   AND e.feature = w.feature
   AND e.event_time >= w.sent_at
   AND e.event_time < w.until_ts
  GROUP BY a.campaign_id, w.cohort, w.feature
),
rates AS (
  SELECT *,
         CAST(x_t AS DOUBLE) / n_t AS p_t,
         CAST(x_h AS DOUBLE) / n_h AS p_h,
         CAST(x_t + x_h AS DOUBLE) / (n_t + n_h) AS p_pool
  FROM counts
  WHERE n_t > 0 AND n_h > 0
),
tests AS (
  SELECT *,
         p_t - p_h AS diff,
         sqrt(p_t * (1 - p_t) / n_t + p_h * (1 - p_h) / n_h) AS se,
         (p_t - p_h) / NULLIF(sqrt(p_pool * (1 - p_pool) * (1.0 / n_t + 1.0 / n_h)), 0) AS z
  FROM rates
),
tails AS (
  SELECT *, 1.0 / (1.0 + 0.2316419 * abs(z)) AS k FROM tests
)
SELECT campaign_id, cohort, feature,
       n_t AS treated,
       x_t AS treated_used,
       ROUND(100 * p_t, 2) AS treated_pct,
       n_h AS held_out,
       x_h AS held_out_used,
       ROUND(100 * p_h, 2) AS held_out_pct,
       ROUND(100 * diff, 2) AS lift_points,
       ROUND(100 * (diff - 1.96 * se), 2) AS ci95_low,
       ROUND(100 * (diff + 1.96 * se), 2) AS ci95_high,
       ROUND(z, 2) AS z,
       2 * exp(-z * z / 2) / sqrt(2 * pi())
         * k * (0.319381530 + k * (-0.356563782 + k * (1.781477937
         + k * (-1.821255978 + k * 1.330274429)))) AS p_value
FROM tails
ORDER BY campaign_id
