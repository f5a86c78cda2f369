#!/usr/bin/env bash
# wrk (Debian's package) for the stream benchmark's query phase: installed with apt-get
# when missing (as root, or through sudo when there is one).
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo" || {
    echo "wrk is missing and I am not root: apt-get install wrk" >&2; exit 1; }
fi
echo "installing wrk (apt-get)..." >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
command -v wrk >/dev/null
