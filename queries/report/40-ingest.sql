-- title: Ingested partner events by day and type
-- about: Rows of partner_events per event_date (the event's own day) and event type.
-- chart: pivot x=event_date key=event_type value=events
SELECT CAST(event_date AS VARCHAR) AS event_date, event_type, count(*) AS events
FROM partner_events
WHERE event_date >= CAST($since AS DATE)
GROUP BY event_date, event_type
ORDER BY event_date, event_type
