#!/usr/bin/env bash
# Debian's chromium for the leaderboard's browser test (Playwright drives it; no browser download).
# Idempotent: does nothing when /usr/bin/chromium exists. Otherwise runs apt-get update and
# apt-get install -y chromium, as root or through passwordless sudo. It never fails the caller:
# without a way to install, the browser test skips and says why.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no apt-get here; the browser test will be skipped" >&2
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "install-browser: not root and no passwordless sudo; the browser test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if "${as_root[@]}" apt-get update -qq >/dev/null \
   && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
  echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)" >&2
else
  echo "install-browser: apt-get could not install chromium; the browser test will be skipped" >&2
fi
exit 0
