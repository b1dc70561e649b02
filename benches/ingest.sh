#!/usr/bin/env bash
# Ingest of the emulator's Currents Avro export (push Send/Open, email Send/Click, canvas Entry;
# ~3.4 events per user, with late and duplicate deliveries) into a fresh lake, timed with
# /usr/bin/time. Usage: bash benches/ingest.sh   Env: USERS (default 300000 ≈ 1M events).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohort-bridge/target}"
USERS="${USERS:-300000}"
SRC="data/bench-currents-$USERS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/cohort-bridge"
if [ ! -d "$SRC" ]; then
  "$BIN" export-engagement --out "$SRC" --users "$USERS" --seed 42 --at 2026-11-20T10:00:00Z >&2
fi
cat > "$WORK/cohort-bridge.toml" <<TOML
[lake]
url = "lake"

[sources.currents]
url = "$PWD/$SRC"
TOML
/usr/bin/time -f 'wall_s=%e user_s=%U sys_s=%S max_rss_kb=%M' -o "$WORK/time.txt" \
  "$BIN" --config "$WORK/cohort-bridge.toml" ingest > "$WORK/summary.json" 2>"$WORK/stderr.txt" \
  || { cat "$WORK/stderr.txt" >&2; exit 1; }
python3 - "$WORK/summary.json" "$WORK/time.txt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t = open(sys.argv[2]).read().strip()
wall = float(t.split()[0].split("=")[1])
print("records=%d events_added=%d duplicates=%d files=%d %s events_per_s=%.0f" % (
    s["records_read"], s["events_added"], s["duplicates"], s["files_read"], t, s["records_read"] / wall))
PY
