-- title: Cohort size and change per run
-- about: Members the partner holds after each sync (the holdout excluded), and the adds and removes sent, each run placed at its logical time (`sync --at`).
-- chart: timeline group=cohort x=run_at series=members,adds,removes
SELECT cohort, run_at, members, adds, removes
FROM runs
WHERE command = 'sync' AND outcome IN ('delivered', 'unchanged') AND run_at >= $since
ORDER BY cohort, run_at, ended_at
