#!/bin/sh
# Example cleanup for a static machine. corral runs it directly (no shell between), with
# CORRAL_MACHINE, CORRAL_VM_ADDRESS, CORRAL_MACHINE_ATTRS (JSON) and CORRAL_POOL set.
# A non-zero exit puts the machine in maintenance with the end of this script's stderr.
exec ssh -o BatchMode=yes -o ConnectTimeout=10 "root@$CORRAL_VM_ADDRESS" \
    'rm -rf /var/lib/mock/* /tmp/build-* && systemctl restart builder-agent'
