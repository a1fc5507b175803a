"""The ``libvirt`` backend (SPEC §6): pools of real VMs on libvirt hypervisors.

Modules, one concept each: :mod:`.spec` (typed VM spec, vdsm-style device normalisation),
:mod:`.options` (the backend's validated options), :mod:`.domxml` (domain XML and corral's
metadata mark), :mod:`.states` (vdsm's named states from lifecycle events), :mod:`.hypervisors`
(placement, memory commit, bounded creations), :mod:`.cloudinit` (NoCloud seed), :mod:`.storage`
(per-VM files), :mod:`.events` (libvirt's event thread), :mod:`.backend` (the I/O shell).
Needs the ``libvirt`` extra (libvirt-python).
"""

from corral.backends.libvirt.backend import LibvirtBackend
from corral.backends.libvirt.options import LibvirtOptions

__all__ = ["LibvirtBackend", "LibvirtOptions"]
