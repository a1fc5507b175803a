#!/bin/sh
# Example `new` command for corral's script backend (works with resalloc's variables too).
# A "VM" is a file named after the VM in DIR, so the inventory survives any crash of corral.
# Usage: new.sh DIR [BOOT_SECONDS] -- creates the VM, waits BOOT_SECONDS, prints its address.
set -eu
dir=${1:?usage: new.sh DIR [BOOT_SECONDS]}
name=${CORRAL_VM_NAME:-${RESALLOC_NAME:?neither CORRAL_VM_NAME nor RESALLOC_NAME is set}}
case $name in
    '' | .* | */*) echo "new.sh: refusing VM name '$name'" >&2; exit 2 ;;
esac
[ -d "$dir" ] || mkdir -p "$dir"
# The VM exists as soon as its file does, even if we are killed while it "boots".
printf 'pool=%s\nid_in_pool=%s\n' "${CORRAL_POOL:-${RESALLOC_POOL_ID:-}}" \
    "${CORRAL_ID_IN_POOL:-${RESALLOC_ID_IN_POOL:-}}" > "$dir/$name"
if [ -n "${2:-}" ]; then sleep "$2"; fi
echo 127.0.0.1
