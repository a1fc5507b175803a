#!/bin/sh
# A `new` whose machine appears only at the end, as a cloud's does: it waits BOOT_SECONDS, then
# creates DIR/<name> and prints an address. Killed before the end, it has created nothing; left
# running after its controller died, it creates the machine after recovery undid the spawn.
# Usage: late_new.sh DIR BOOT_SECONDS
set -eu
dir=$1
name=${CORRAL_VM_NAME:?}
sleep "$2"
mkdir -p "$dir"
echo "vm $name" > "$dir/$name"
echo 127.0.0.1
