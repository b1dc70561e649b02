-- Email click-through per campaign and per plan segment of the recipients (users.plan):
-- recipients with a Send, clickers with a Click (suspected bot clicks excluded).
WITH sent AS (
  SELECT DISTINCT external_user_id AS user_id, campaign_name
  FROM partner_events
  WHERE event_type = 'users.messages.email.Send' AND external_user_id IS NOT NULL
),
clicked AS (
  SELECT DISTINCT external_user_id AS user_id, campaign_name
  FROM partner_events
  WHERE event_type = 'users.messages.email.Click' AND external_user_id IS NOT NULL
    AND properties NOT LIKE '%"is_suspected_bot_click":true%'
)
SELECT s.campaign_name,
       COALESCE(u.plan, 'unknown') AS plan,
       COUNT(*) AS recipients,
       COUNT(c.user_id) AS clickers,
       ROUND(100.0 * COUNT(c.user_id) / COUNT(*), 1) AS click_through_pct
FROM sent s
LEFT JOIN clicked c ON c.user_id = s.user_id AND c.campaign_name = s.campaign_name
LEFT JOIN users u ON u.user_id = s.user_id
GROUP BY s.campaign_name, COALESCE(u.plan, 'unknown')
ORDER BY s.campaign_name, plan
