"""Per-VM files of the libvirt backend: one folder per VM under ``storage_dir/<pool>/``.

The folder holds the boot overlay (qcow2 over the base image), blank extra disks, the cloud-init
seed and the serial console log. It is created before the domain is defined and removed after it
is undefined, so a folder without a domain is a leftover of an interrupted spawn that ``list``
reports and ``terminate`` removes: no file outlives its VM.

Blocking (``qemu-img`` and file system calls): call it through ``Backend.run_blocking``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from corral import exceptions
from corral.backends.libvirt import cloudinit
from corral.backends.libvirt.spec import Drive

CONSOLE_LOG = "console.log"
QEMU_IMG_TIMEOUT = 120.0


def pool_dir(root: Path, pool: str) -> Path:
    """The folder of one pool's VM folders."""
    return root / pool


def vm_dir(root: Path, pool: str, vm: str) -> Path:
    """The folder of one VM's files."""
    return pool_dir(root, pool) / vm


def leftovers(root: Path, pool: str) -> list[str]:
    """The names of the VM folders of ``pool`` (each VM has one while it exists)."""
    folder = pool_dir(root, pool)
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def _qemu_img(*args: str) -> None:
    try:
        done = subprocess.run(  # noqa: S603 - argv list, no shell
            ["qemu-img", *args],  # noqa: S607 - qemu-img from PATH, like libvirt itself
            capture_output=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise exceptions.BackendError(f"qemu-img {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise exceptions.BackendError(
            f"qemu-img {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()[-500:]}"
        )


def prepare(
    folder: Path,
    drives: Sequence[Drive],
    *,
    seed_files: dict[str, str] | None = None,
    console: bool = False,
) -> tuple[list[str | None], str | None]:
    """Create the VM's folder and files; return each drive's path and the console log's path.

    Idempotent: files already there (a retried spawn) are created again from scratch.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str | None] = []
    for drive in drives:
        if drive.kind == "overlay":
            path = folder / f"{drive.target}.qcow2"
            base = Path(drive.source or "")
            if not base.is_file():
                raise exceptions.BackendError(f"base image {base} does not exist")
            _qemu_img(
                "create", "-q", "-f", "qcow2", "-F", _format_of(base), "-b", str(base), str(path)
            )
            paths.append(str(path))
        elif drive.kind == "blank":
            path = folder / f"{drive.target}.qcow2"
            _qemu_img("create", "-q", "-f", "qcow2", str(path), f"{int(drive.size_gib * 1024)}M")
            paths.append(str(path))
        elif drive.kind == "seed":
            path = folder / "seed.iso"
            cloudinit.write_seed(path, seed_files or {})
            paths.append(str(path))
        else:
            paths.append(drive.source)
    log: str | None = None
    if console:
        log_path = folder / CONSOLE_LOG
        log_path.write_bytes(b"")
        log = str(log_path)
    return paths, log


def _format_of(base: Path) -> str:
    with base.open("rb") as handle:
        return "qcow2" if handle.read(4) == b"QFI\xfb" else "raw"


def remove(folder: Path) -> None:
    """Delete the VM's folder and everything in it; a missing folder is fine."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        raise exceptions.BackendError(f"cannot remove {folder}")


def read_tail(path: Path, limit: int = 65536) -> str:
    """The last ``limit`` bytes of a console log as text ('' when missing)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
