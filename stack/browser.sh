#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian, for the console's browser test
# (tests/e2e/test_console.py drives it with Selenium). Idempotent: does nothing when
# both are installed. Debian's packages, not a browser build downloaded by a tool,
# because the machines reach only the package registries.
#
#   stack/browser.sh            install chromium and chromium-driver when missing
#   stack/browser.sh --check    exit 0 when both are there, 1 when not (installs nothing)
set -euo pipefail

CACHE_DIR="${EVENTFOLD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventfold}"
log() { printf '[browser] %s\n' "$*" >&2; }

installed() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null
}

if installed; then
  exit 0
fi
[ "${1:-}" = "--check" ] && exit 1
if [ "$(id -u)" != 0 ]; then
  log "chromium or chromedriver missing: run 'sudo apt-get install -y chromium chromium-driver'"
  log "(the console's browser test is skipped without them)"
  exit 0
fi
mkdir -p "$CACHE_DIR"
log "installing chromium and chromium-driver from Debian (about a minute the first time)"
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    chromium chromium-driver fonts-dejavu-core
}
if ! apt_install >"$CACHE_DIR/browser-provision.log" 2>&1; then
  apt-get update -qq -o DPkg::Lock::Timeout=300 >>"$CACHE_DIR/browser-provision.log" 2>&1 || true
  apt_install >>"$CACHE_DIR/browser-provision.log" 2>&1 \
    || { log "apt-get could not install chromium; see $CACHE_DIR/browser-provision.log"; exit 1; }
fi
installed || { log "chromium installed but chromium/chromedriver not on PATH"; exit 1; }
log "$(chromium --version 2>/dev/null || echo chromium) ready"
