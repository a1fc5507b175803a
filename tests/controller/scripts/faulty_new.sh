#!/bin/sh
# A misbehaving `new` for the fault tests: of every 10 spawns about 3 fail, 1 hangs past any
# timeout (after creating its VM), 1 prints garbage; the rest create the VM and print an address.
# Usage: faulty_new.sh DIR
set -eu
dir=$1
name=${CORRAL_VM_NAME:?}
roll=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
roll=$((roll % 10))
if [ "$roll" -lt 3 ]; then echo "faulty_new: injected failure for $name" >&2; exit 1; fi
mkdir -p "$dir"
echo "vm $name" > "$dir/$name"
if [ "$roll" -eq 3 ]; then exec sleep 60; fi
if [ "$roll" -eq 4 ]; then echo 'garbage!! not an address'; exit 0; fi
echo 127.0.0.1
