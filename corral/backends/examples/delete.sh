#!/bin/sh
# Example `delete` command for corral's script backend: removes the VM's file from DIR.
# Idempotent: deleting a VM that does not exist succeeds. Usage: delete.sh DIR
set -eu
dir=${1:?usage: delete.sh DIR}
name=${CORRAL_VM_NAME:-${RESALLOC_NAME:?neither CORRAL_VM_NAME nor RESALLOC_NAME is set}}
case $name in
    '' | .* | */*) echo "delete.sh: refusing VM name '$name'" >&2; exit 2 ;;
esac
rm -f "$dir/$name"
