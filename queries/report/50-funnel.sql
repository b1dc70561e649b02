-- title: Engagement funnel
-- about: Per campaign: members sent a message, those who opened (push) or clicked (email), and those who used the campaign's feature within its window of their send. The feature and window are the project file's [campaigns.<campaign_id>]; a campaign without one has no feature (empty) to count.
-- chart: columns x=campaign_id series=sent,opened_or_clicked,used_feature
WITH sends AS (
  SELECT external_user_id AS user_id, campaign_id, MIN(event_time) AS sent_at
  FROM partner_events
  WHERE event_type IN ('users.messages.pushnotification.Send', 'users.messages.email.Send')
    AND external_user_id IS NOT NULL AND campaign_id IS NOT NULL
    AND event_time >= $since
  GROUP BY external_user_id, campaign_id
),
engaged AS (
  SELECT DISTINCT external_user_id AS user_id, campaign_id
  FROM partner_events
  WHERE event_type IN ('users.messages.pushnotification.Open', 'users.messages.email.Click')
    AND external_user_id IS NOT NULL
),
used AS (
  SELECT DISTINCT s.user_id, s.campaign_id
  FROM sends s
  JOIN campaigns c ON c.campaign_id = s.campaign_id
  JOIN events e
    ON e.user_id = s.user_id AND e.event_name = 'feature_used' AND e.feature = c.feature
   AND e.event_time >= s.sent_at
   AND e.event_time < s.sent_at
         + CAST(concat(CAST(CAST(c.window_hours * 3600 AS BIGINT) AS VARCHAR), ' seconds') AS INTERVAL)
)
SELECT s.campaign_id,
       c.feature,
       COUNT(*) AS sent,
       COUNT(g.user_id) AS opened_or_clicked,
       CASE WHEN c.feature IS NULL THEN NULL ELSE COUNT(u.user_id) END AS used_feature
FROM sends s
LEFT JOIN campaigns c ON c.campaign_id = s.campaign_id
LEFT JOIN engaged g ON g.user_id = s.user_id AND g.campaign_id = s.campaign_id
LEFT JOIN used u ON u.user_id = s.user_id AND u.campaign_id = s.campaign_id
GROUP BY s.campaign_id, c.feature
ORDER BY s.campaign_id
