#!/bin/sh
# Example livecheck: exit 0 when the reserved machine answers.
exec ssh -o BatchMode=yes -o ConnectTimeout=5 "root@$CORRAL_VM_ADDRESS" true
