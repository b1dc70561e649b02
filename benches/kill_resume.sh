#!/bin/bash
# A full sync killed (SIGKILL) DELAY seconds after PATTERN shows in its debug log, then run again
# against the same emulator: the figures of docs/benchmarks.md, "A kill -9 at 100M".
#
#   benches/kill_resume.sh LAKE SQL PATTERN DELAY
#   benches/kill_resume.sh data/bench-lake-200m-uuid benches/half.sql "query read; sorting" 25
#
# Uses the release build (CARGO_TARGET_DIR, default target/); prints the second run's log and
# summary, then what the emulator holds and its counters (redundant_adds: batches sent twice).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${CARGO_TARGET_DIR:-$ROOT/target}/release/cohort-bridge
LAKE=$(realpath "$1"); SQL=$(realpath "$2"); PATTERN=$3; DELAY=$4
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
PORT=18998
export KR_KEY=kill-resume-key-0123456789 KR_SECRET=kill-resume-secret-0123456789
cat > "$WORK/cohort-bridge.toml" <<TOML
[lake]
url = "$LAKE"
[tables.users]
path = "users"
[state]
url = "$WORK/state"
[destinations.emulator]
kind = "braze"
base_url = "http://127.0.0.1:$PORT"
partner = "cohort-bridge"
partner_api_key_env = "KR_KEY"
client_secret_env = "KR_SECRET"
batch_size = 1000
requests_per_second = 100000
max_in_flight = 16
[cohorts.half]
sql = "$SQL"
TOML
"$B" emulator --port $PORT --partner-api-key-env KR_KEY --client-secret-env KR_SECRET \
  --rate-limit 1000000000 --rate-window 1h >/dev/null 2>&1 &
EMU=$!
trap 'kill $EMU 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -s "127.0.0.1:$PORT/_emulator/stats" >/dev/null && break; sleep 0.1; done
SYNC=("$B" --config "$WORK/cohort-bridge.toml" sync half --no-progress --at 2026-11-20T00:00:00Z)
RUST_LOG=cohort_bridge=debug "${SYNC[@]}" >"$WORK/first.out" 2>"$WORK/first.err" &
PID=$!
for _ in $(seq 6000); do grep -q "$PATTERN" "$WORK/first.err" && break; sleep 0.1; done
sleep "$DELAY"
kill -9 $PID; wait $PID 2>/dev/null || true
echo "killed; the partner held: $(curl -s --max-time 900 "127.0.0.1:$PORT/_emulator/cohorts")"
"$B" --config "$WORK/cohort-bridge.toml" state unlock half --force >/dev/null 2>&1
/usr/bin/time -f "second run: %e s, %M KB peak RSS" "${SYNC[@]}" >"$WORK/second.out" 2>"$WORK/second.err" || true
grep -E "INFO|WARN|ERROR|second run" "$WORK/second.err" | cut -c1-220
cut -c1-600 "$WORK/second.out"
echo "the partner holds: $(curl -s --max-time 900 "127.0.0.1:$PORT/_emulator/cohorts")"
curl -s "127.0.0.1:$PORT/_emulator/stats"; echo
