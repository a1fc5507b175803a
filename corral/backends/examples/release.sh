#!/bin/sh
# Example `release` command for corral's script backend: records a cleanup in the VM's file.
# Fails for a VM that does not exist. Usage: release.sh DIR
set -eu
dir=${1:?usage: release.sh DIR}
name=${CORRAL_VM_NAME:-${RESALLOC_NAME:?neither CORRAL_VM_NAME nor RESALLOC_NAME is set}}
test -f "$dir/$name" || { echo "release.sh: no VM $name" >&2; exit 1; }
echo released >> "$dir/$name"
