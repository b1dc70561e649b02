-- After a user opened a push, did they use the feature it pointed to within the campaign's
-- window — against users who got the same push and did not open it (counted from the send).
-- Which feature each campaign points to, and its window, are the project file's
-- `[campaigns.<campaign_id>]` sections (the `campaigns` table).
WITH sends AS (
  SELECT external_user_id AS user_id, campaign_id, MIN(event_time) AS sent_at
  FROM partner_events
  WHERE event_type = 'users.messages.pushnotification.Send' AND external_user_id IS NOT NULL
  GROUP BY external_user_id, campaign_id
),
opens AS (
  SELECT external_user_id AS user_id, campaign_id, MIN(event_time) AS opened_at
  FROM partner_events
  WHERE event_type = 'users.messages.pushnotification.Open' AND external_user_id IS NOT NULL
  GROUP BY external_user_id, campaign_id
),
exposed AS (
  SELECT s.user_id, s.campaign_id, cf.feature, cf.window_hours,
         o.opened_at IS NOT NULL AS opened,
         COALESCE(o.opened_at, s.sent_at) AS from_ts
  FROM sends s
  JOIN campaigns cf ON cf.campaign_id = s.campaign_id
  LEFT JOIN opens o ON o.user_id = s.user_id AND o.campaign_id = s.campaign_id
),
used AS (
  SELECT DISTINCT x.user_id, x.campaign_id
  FROM exposed x
  JOIN events e
    ON e.user_id = x.user_id
   AND e.event_name = 'feature_used'
   AND e.feature = x.feature
   AND e.event_time >= x.from_ts
   AND e.event_time < x.from_ts
         + CAST(concat(CAST(CAST(x.window_hours * 3600 AS BIGINT) AS VARCHAR), ' seconds') AS INTERVAL)
)
SELECT x.campaign_id,
       x.feature,
       CASE WHEN x.opened THEN 'opened' ELSE 'not opened' END AS push,
       COUNT(*) AS users,
       COUNT(u.user_id) AS used_feature,
       ROUND(100.0 * COUNT(u.user_id) / COUNT(*), 1) AS pct_used
FROM exposed x
LEFT JOIN used u ON u.user_id = x.user_id AND u.campaign_id = x.campaign_id
GROUP BY x.campaign_id, x.feature, x.opened
ORDER BY x.campaign_id, push DESC
