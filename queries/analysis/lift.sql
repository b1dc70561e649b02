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
WITH first_send AS (
  SELECT campaign_id, MIN(event_time) AS sent_at
  FROM partner_events
  WHERE event_type = 'users.messages.pushnotification.Send'
  GROUP BY campaign_id
),
windows AS (
  SELECT t.campaign_id, t.cohort, t.cohort_id, t.destination, t.feature, f.sent_at,
         f.sent_at + CAST(concat(CAST(CAST(t.window_hours * 3600 AS BIGINT) AS VARCHAR), ' seconds')
           AS INTERVAL) AS until_ts,
         CAST(date_part('epoch', f.sent_at) * 1000 AS BIGINT) AS sent_ms
  FROM campaigns t
  JOIN first_send f ON f.campaign_id = t.campaign_id
),
changes AS (
  SELECT c.campaign_id, h.user_id, h.op,
         row_number() OVER (
           PARTITION BY c.campaign_id, h.destination, h.user_id, h.op IN ('add', 'remove')
           ORDER BY h.run_at_ms DESC, h.committed_at_ms DESC
         ) AS latest
  FROM cohort_changes h
  JOIN windows c ON h.destination = c.destination AND h.cohort_id = c.cohort_id
  WHERE h.run_at_ms <= c.sent_ms
),
arms AS (
  SELECT DISTINCT campaign_id, user_id,
         CASE WHEN op = 'add' THEN 'treated' ELSE 'held_out' END AS arm
  FROM changes
  WHERE latest = 1 AND op IN ('add', 'held_out')
),
used AS (
  SELECT DISTINCT a.campaign_id, a.user_id
  FROM arms a
  JOIN windows c ON c.campaign_id = a.campaign_id
  JOIN events e
    ON e.user_id = a.user_id
   AND e.event_name = 'feature_used'
   AND e.feature = c.feature
   AND e.event_time >= c.sent_at
   AND e.event_time < c.until_ts
),
counts AS (
  SELECT a.campaign_id,
         SUM(CASE WHEN a.arm = 'treated' THEN 1 ELSE 0 END) AS n_t,
         SUM(CASE WHEN a.arm = 'treated' AND u.user_id IS NOT NULL THEN 1 ELSE 0 END) AS x_t,
         SUM(CASE WHEN a.arm = 'held_out' THEN 1 ELSE 0 END) AS n_h,
         SUM(CASE WHEN a.arm = 'held_out' AND u.user_id IS NOT NULL THEN 1 ELSE 0 END) AS x_h
  FROM arms a
  LEFT JOIN used u ON u.campaign_id = a.campaign_id AND u.user_id = a.user_id
  GROUP BY a.campaign_id
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
SELECT x.campaign_id, c.cohort, c.feature,
       x.n_t AS treated,
       x.x_t AS treated_used,
       ROUND(100 * x.p_t, 2) AS treated_pct,
       x.n_h AS held_out,
       x.x_h AS held_out_used,
       ROUND(100 * x.p_h, 2) AS held_out_pct,
       ROUND(100 * x.diff, 2) AS lift_points,
       ROUND(100 * (x.diff - 1.96 * x.se), 2) AS ci95_low,
       ROUND(100 * (x.diff + 1.96 * x.se), 2) AS ci95_high,
       ROUND(x.z, 2) AS z,
       2 * exp(-x.z * x.z / 2) / sqrt(2 * pi())
         * x.k * (0.319381530 + x.k * (-0.356563782 + x.k * (1.781477937
         + x.k * (-1.821255978 + x.k * 1.330274429)))) AS p_value
FROM tails x
JOIN windows c ON c.campaign_id = x.campaign_id
ORDER BY x.campaign_id
