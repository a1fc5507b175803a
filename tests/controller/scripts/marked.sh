#!/bin/sh
# Runs a backend command and logs when it starts and ends, for the chaos test to know what was in
# flight when it killed the controller. Usage: marked.sh LOG KIND COMMAND [ARGS...]
# Appends "start KIND ID PID VM" before and "end KIND ID PID RC" after (short lines with
# O_APPEND: atomic); the command's stdout and exit status pass through unchanged.
set -u
log=$1
kind=$2
shift 2
id="p$$"
echo "start $kind $id $$ ${CORRAL_VM_NAME:-?}" >> "$log"
"$@"
rc=$?
echo "end $kind $id $$ $rc" >> "$log"
exit "$rc"
