#!/usr/bin/env bash
# Full sync of a ~1M-member cohort (active_30d) from a 2M-user lake to the partner emulator
# running as a separate process, timed with /usr/bin/time -v. Usage: bash benches/full_sync.sh
# Env: USERS (default 2000000), RUNS (default 3), PORT (default 18080).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohort-bridge/target}"
USERS="${USERS:-2000000}"; RUNS="${RUNS:-3}"; PORT="${PORT:-18080}"
LAKE=data/bench-lake
AT=2026-11-28T00:00:00Z

cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/cohort-bridge"

if [ ! -f "$LAKE/_generated.json" ] || ! grep -q "\"users\": $USERS," "$LAKE/_generated.json"; then
  rm -rf "$LAKE"
  echo "generating $USERS users x 30 days into $LAKE" >&2
  "$BIN" generate --out "$LAKE" --users "$USERS" --days 30 --seed 42 --end-date 2026-11-27 >&2
fi

export BENCH_PARTNER_API_KEY="bench-key-$RANDOM$RANDOM" BENCH_CLIENT_SECRET="bench-secret-$RANDOM$RANDOM"
CONFIG=$(mktemp --suffix=.toml -p benches)
trap 'rm -f "$CONFIG"; kill $EMU 2>/dev/null || true' EXIT
sed "s#127.0.0.1:18080#127.0.0.1:$PORT#" benches/full_sync.toml > "$CONFIG"

for run in $(seq 1 "$RUNS"); do
  # A fresh emulator and a fresh state per run, so every run is a first (full) delivery.
  rm -rf "$LAKE/_cohort_bridge"
  "$BIN" emulator --port "$PORT" --partner-api-key-env BENCH_PARTNER_API_KEY \
    --client-secret-env BENCH_CLIENT_SECRET --rate-limit 100000000 2>/dev/null &
  EMU=$!
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$PORT/_emulator/stats" >/dev/null && break; sleep 0.05; done
  /usr/bin/time -f 'wall_s=%e user_s=%U sys_s=%S max_rss_kb=%M' -o /tmp/full_sync_time.txt \
    "$BIN" --config "$CONFIG" sync active_30d --at "$AT" --no-progress > /tmp/full_sync_summary.json 2>/tmp/full_sync_stderr.txt \
    || { cat /tmp/full_sync_stderr.txt >&2; exit 1; }
  held=$(curl -s "http://127.0.0.1:$PORT/_emulator/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ids_added"])')
  members=$(python3 -c 'import json; print(json.load(open("/tmp/full_sync_summary.json"))["members"])')
  kill $EMU; wait $EMU 2>/dev/null || true
  [ "$held" = "$members" ] || { echo "MISMATCH: emulator received $held ids, summary says $members" >&2; exit 1; }
  echo "run $run: members=$members $(cat /tmp/full_sync_time.txt) $(python3 -c 'import json; s=json.load(open("/tmp/full_sync_summary.json")); print("query_s=%.3f requests=%d retries=%d" % (s["query_seconds"], s["requests"], s["retries"]))')"
done
