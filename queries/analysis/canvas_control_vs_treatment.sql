-- Canvas holdout: users who entered a canvas, control group against treatment, and how many
-- used any feature within 72 hours of entering. `in_control_group` is kept in `properties`.
WITH entries AS (
  SELECT external_user_id AS user_id, canvas_name,
         properties LIKE '%"in_control_group":true%' AS control,
         MIN(event_time) AS entered_at
  FROM partner_events
  WHERE event_type = 'users.canvas.Entry' AND external_user_id IS NOT NULL
  GROUP BY external_user_id, canvas_name, properties LIKE '%"in_control_group":true%'
),
converted AS (
  SELECT DISTINCT x.user_id, x.canvas_name
  FROM entries x
  JOIN events e
    ON e.user_id = x.user_id
   AND e.event_name = 'feature_used'
   AND e.event_time >= x.entered_at
   AND e.event_time < x.entered_at + INTERVAL '72 hours'
)
SELECT x.canvas_name,
       CASE WHEN x.control THEN 'control' ELSE 'treatment' END AS arm,
       COUNT(*) AS users,
       COUNT(c.user_id) AS used_a_feature_72h,
       ROUND(100.0 * COUNT(c.user_id) / COUNT(*), 1) AS pct
FROM entries x
LEFT JOIN converted c ON c.user_id = x.user_id AND c.canvas_name = x.canvas_name
GROUP BY x.canvas_name, x.control
ORDER BY x.canvas_name, arm
