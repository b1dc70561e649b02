#!/usr/bin/env bash
# Incremental sync of a ~9.9M-member cohort with ~1% churn each way (benches/churn.sql) against
# the partner emulator running as a separate process, timed with /usr/bin/time -v.
# A first full sync (timed too, reported apart) builds the snapshot; then RUNS incremental syncs
# on consecutive days. Usage: bash benches/incremental.sh   Env: USERS (10000000), RUNS (3), PORT (18081).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohort-bridge/target}"
USERS="${USERS:-10000000}"; RUNS="${RUNS:-3}"; PORT="${PORT:-18081}"
LAKE=data/bench-lake-10m

cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/cohort-bridge"

if [ ! -f "$LAKE/_generated.json" ] || ! grep -q "\"users\": $USERS," "$LAKE/_generated.json"; then
  rm -rf "$LAKE"
  echo "generating $USERS users into $LAKE" >&2
  "$BIN" generate --out "$LAKE" --users "$USERS" --days 1 --events-per-day 1000 --seed 42 --end-date 2026-11-27 >&2
fi
rm -rf "$LAKE/_cohort_bridge"   # a fresh state: the emulator starts empty too

export BENCH_PARTNER_API_KEY="bench-key-$RANDOM$RANDOM" BENCH_CLIENT_SECRET="bench-secret-$RANDOM$RANDOM"
CONFIG=$(mktemp --suffix=.toml -p benches)
sed "s#127.0.0.1:18081#127.0.0.1:$PORT#" benches/incremental.toml > "$CONFIG"
"$BIN" emulator --port "$PORT" --partner-api-key-env BENCH_PARTNER_API_KEY \
  --client-secret-env BENCH_CLIENT_SECRET --rate-limit 100000000 2>/dev/null &
EMU=$!
trap 'rm -f "$CONFIG"; kill $EMU 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$PORT/_emulator/stats" >/dev/null && break; sleep 0.05; done

run() { # $1 = day of November/December 2026, $2 = label
  /usr/bin/time -f 'wall_s=%e user_s=%U sys_s=%S max_rss_kb=%M' -o /tmp/incr_time.txt \
    "$BIN" --config "$CONFIG" sync churn --at "$1" --no-progress > /tmp/incr_summary.json 2>/tmp/incr_stderr.txt \
    || { cat /tmp/incr_stderr.txt >&2; exit 1; }
  echo "$2: $(cat /tmp/incr_time.txt) $(python3 -c 'import json; s=json.load(open("/tmp/incr_summary.json")); print("members=%d adds=%d removes=%d requests=%d query_s=%.3f" % (s["members"], s["adds"], s["removes"], s["requests"], s["query_seconds"]))')"
}
run 2026-11-10T00:00:00Z "full (first) sync"
for i in $(seq 1 "$RUNS"); do run "2026-11-$((10 + i))T00:00:00Z" "incremental $i"; done
held=$(curl -s "http://127.0.0.1:$PORT/_emulator/cohorts/churn/members" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["members"]) if isinstance(d, dict) else len(d))')
members=$(python3 -c 'import json; print(json.load(open("/tmp/incr_summary.json"))["members"])')
[ "$held" = "$members" ] || { echo "MISMATCH: emulator holds $held, the cohort has $members" >&2; exit 1; }
echo "emulator holds exactly the cohort: $held members"
