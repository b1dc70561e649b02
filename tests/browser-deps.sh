#!/usr/bin/env bash
# The report's browser test (tests/it/report.rs) loads the page in Debian's Chromium. Installs it
# when it is missing (needs root and Debian's package registry); does nothing when it is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "tests/browser-deps.sh: Chromium is missing; run as root or: sudo apt-get install chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
