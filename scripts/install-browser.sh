#!/usr/bin/env bash
# Debian's chromium for the leaderboard's browser test (Playwright drives it; no browser download).
# Idempotent; without root or apt-get it does nothing and the browser test skips with its reason.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: not root or no apt-get; the browser test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null \
  || echo "install-browser: apt-get could not install chromium; the browser test will be skipped" >&2
exit 0
