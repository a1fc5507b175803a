"""A per-VM cloud-init NoCloud seed: ``meta-data`` and ``user-data`` texts, written as an ISO 9660
image labelled ``cidata`` (what cloud-init's NoCloud data source looks for).

The texts are pure functions of the VM's name and the pool's options; :func:`write_seed` is the
only I/O (pycdlib, a pure-Python ISO writer, so no ``genisoimage`` is needed on the host).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from corral import exceptions

VOLUME_LABEL = "cidata"


def meta_data(vm: str, instance_id: str) -> str:
    """NoCloud ``meta-data``: the instance id and the hostname (the VM's name). JSON is YAML."""
    return json.dumps({"instance-id": instance_id, "local-hostname": vm}, indent=1) + "\n"


def user_data(vm: str, ssh_keys: Sequence[str], extra: str | None) -> str:
    """NoCloud ``user-data``: the operator's cloud-config with the hostname and SSH keys added.

    The operator's text must be a ``#cloud-config`` document when given; corral's keys go first
    in a separate part only when there is no operator text, else they are prepended as YAML keys
    (the operator's own ``hostname``/``ssh_authorized_keys`` then win, YAML's last key counting).
    """
    lines = ["#cloud-config", f"hostname: {json.dumps(vm)}"]
    if ssh_keys:
        lines.append("ssh_authorized_keys:")
        lines.extend(f"  - {json.dumps(key)}" for key in ssh_keys)
    if extra is not None:
        body = extra.lstrip()
        if not body.startswith("#cloud-config"):
            raise exceptions.ConfigError("cloud_init.user_data must start with #cloud-config")
        lines.append(body.split("\n", 1)[1] if "\n" in body else "")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_seed(path: Path, files: dict[str, str]) -> None:
    """Write an ISO 9660 (Joliet and Rock Ridge) image labelled ``cidata`` holding ``files``."""
    try:
        import pycdlib  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # pragma: no cover - the libvirt extra installs it
        raise exceptions.ConfigError(
            "cloud_init needs pycdlib (pip install 'corral[libvirt]')"
        ) from exc
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    for name, text in files.items():
        data = text.encode()
        short = name.upper().replace("-", "_")[:8] + ".;1"
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{short}",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    tmp = path.with_suffix(".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.replace(path)
