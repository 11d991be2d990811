#!/usr/bin/env bash
# Debian's Chromium for the console's browser test (contract-tests/test_console.py), installed
# with apt-get when /usr/bin/chromium is missing; Playwright never downloads a browser here.
# `make browser` runs it, and `make test` / `make test-contract` before their tests.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
fail() {
    echo "make browser: $CHROMIUM is missing and $1; the console's browser test fails without it" >&2
    exit 1
}
command -v apt-get >/dev/null 2>&1 \
    || fail "this is not a Debian machine (no apt-get): install Chromium as $CHROMIUM"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    fail "installing it needs root or sudo: run 'sudo apt-get install chromium'"
fi
echo "make browser: installing Debian's chromium (apt-get)"
"${sudo[@]}" apt-get update -qq || fail "apt-get update failed"
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    chromium >/dev/null || fail "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || fail "apt-get did not install it"
