#!/usr/bin/env bash
# Ingest of the emulator's Currents Avro export (push Send/Open, email Send/Click, canvas Entry;
# ~3.4 events per user, with late and duplicate deliveries) into a fresh lake, RUNS times, timed
# with /usr/bin/time. The export is generated once and cached under data/.
# Usage: bash benches/ingest.sh   Env: USERS (default 3000000 ≈ 10M events), RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohort-bridge/target}"
USERS="${USERS:-3000000}"
RUNS="${RUNS:-3}"
SRC="data/bench-currents-$USERS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/cohort-bridge"
if [ ! -f "$SRC/.complete" ]; then
  rm -rf "$SRC"
  "$BIN" export-engagement --out "$SRC" --users "$USERS" --seed 42 --at 2026-11-20T10:00:00Z >&2
  touch "$SRC/.complete"
fi
for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/lake"
  cat > "$WORK/cohort-bridge.toml" <<TOML
[lake]
url = "lake"

[sources.currents]
url = "$PWD/$SRC"
TOML
  /usr/bin/time -f 'wall_s=%e user_s=%U sys_s=%S max_rss_kb=%M' -o "$WORK/time.txt" \
    "$BIN" --config "$WORK/cohort-bridge.toml" ingest > "$WORK/summary.json" 2>"$WORK/stderr.txt" \
    || { cat "$WORK/stderr.txt" >&2; exit 1; }
  python3 - "$WORK/summary.json" "$WORK/time.txt" "$run" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t = open(sys.argv[2]).read().strip()
f = dict(kv.split("=") for kv in t.split())
wall = float(f["wall_s"])
print("run=%s records=%d events_added=%d duplicates=%d files=%d days=%d wall_s=%.2f cpu_s=%.2f "
      "max_rss_mb=%.0f events_per_s=%.0f" % (
    sys.argv[3], s["records_read"], s["events_added"], s["duplicates"], s["files_read"],
    len(s["days_written"]), wall, float(f["user_s"]) + float(f["sys_s"]),
    int(f["max_rss_kb"]) / 1024, s["records_read"] / wall))
PY
done
du -sh "$SRC" "$WORK/lake/partner_events" | sed 's/^/size: /'
