#!/bin/sh
# Example `livecheck` command for corral's script backend: the VM is alive while its file exists.
# Usage: livecheck.sh DIR
set -eu
dir=${1:?usage: livecheck.sh DIR}
name=${CORRAL_VM_NAME:-${RESALLOC_NAME:?neither CORRAL_VM_NAME nor RESALLOC_NAME is set}}
test -f "$dir/$name"
