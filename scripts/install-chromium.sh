#!/usr/bin/env bash
# Install Debian's Chromium for floodway's browser tests (tests/process/test_web_browser.py) when
# /usr/bin/chromium is missing. Idempotent and quiet: does nothing when it is there already.
# Playwright drives this system browser; `playwright install` (a browser download) is never used.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "install-chromium: /usr/bin/chromium is missing and this user cannot run apt-get;" \
             "install the Debian package 'chromium'" >&2
        exit 0  # the browser tests then fail with a clear message
    fi
fi
echo "install-chromium: installing Debian's chromium (for the browser tests)..." >&2
export DEBIAN_FRONTEND=noninteractive
LOG="$(mktemp)"
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation; } >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "install-chromium: apt-get could not install chromium; the browser tests will fail" >&2
fi
rm -f "$LOG"
exit 0
