#!/usr/bin/env bash
# What supervisord runs for each program of a stack folder (stack/stack.sh writes the
# config): the command line and environment that stack.sh recorded when it last started
# the program, so a restart after a crash runs exactly what was started, and the pid
# file where stack.sh and its tests look for it. exec keeps the pid: supervisord's
# signals and the pid file reach the program itself.
#
#   stack/launch.sh RUN_DIR NAME
set -euo pipefail
run_dir="$1" name="$2"
mapfile -d '' argv < "$run_dir/$name.argv"
mapfile -d '' environment < "$run_dir/$name.env"
echo $$ > "$run_dir/$name.pid"
exec env -i "${environment[@]}" "${argv[@]}"
