#!/bin/sh
# A `delete` that fails twice for every VM before it succeeds (idempotent afterwards).
# Usage: flaky_delete.sh DIR
set -eu
dir=$1
name=${CORRAL_VM_NAME:?}
count="$dir/.fails-$name"
n=$(cat "$count" 2>/dev/null || echo 0)
if [ "$n" -lt 2 ]; then
    echo $((n + 1)) > "$count"
    echo "flaky_delete: injected failure $((n + 1)) for $name" >&2
    exit 1
fi
rm -f "$dir/$name"
