#!/bin/sh
# Example `list` command for corral's script backend: prints one VM name per line.
# Usage: list.sh DIR (a missing DIR means no VMs).
set -eu
dir=${1:?usage: list.sh DIR}
[ -d "$dir" ] || exit 0
for path in "$dir"/*; do
    [ -f "$path" ] && printf '%s\n' "${path##*/}"
done
exit 0
