"""Benchmarks of issue 10: the libvirt backend's own overhead, and real TCG guests.

Run: ``python bench/libvirt.py`` (``--quick`` for fewer samples; ``--no-real`` to skip QEMU).

1. corral's overhead per spawn and per terminate beyond libvirt's own calls, on the test driver
   (guard + backend, sequential; every libvirt method is timed and its time subtracted): p50/p99;
2. spawn efficiency on the test driver: 1,000 VMs through the controller with ``max_starting:
   50``, against the backend alone doing the same 1,000 spawn+poll at concurrency 50 (the best the
   controller can do on these calls): backend-alone time over controller time, target >= 0.9;
3. real QEMU (TCG) under ``qemu:///system`` (a running libvirtd is needed), on the user's path
   (``corral serve`` in its own process, one HTTP client per ticket): time from a ticket's
   creation to its VM up (the guest's readiness line seen on its serial console), for 1, 4 and 8
   VMs in parallel, next to the same guests started by plain ``virsh create`` of the very XML
   corral generates over identical pre-made overlays, both watched for the readiness line at the
   same 0.1 s interval, interleaved; medians; target: corral adds under 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# this file is named libvirt.py: its folder must not shadow the libvirt module
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE.parent / "tests" / "backends" / "libvirt"))

import libvirt  # noqa: E402 - after the sys.path fix above

from corral.backends import load_backend  # noqa: E402 - after the sys.path fix above
from corral.backends.base import VMSpec  # noqa: E402 - after the sys.path fix above
from corral.backends.guard import GuardedBackend  # noqa: E402 - after the sys.path fix above
from corral.backends.libvirt import LibvirtBackend, domxml, storage  # noqa: E402 - after the sys.path fix above
from corral.config import parse_config  # noqa: E402 - after the sys.path fix above
from corral.controller import Controller  # noqa: E402 - after the sys.path fix above
from corral.pools.stats import percentile  # noqa: E402 - after the sys.path fix above

NODE = """<node><cpu><mhz>2000</mhz><model>t</model><active>64</active><nodes>1</nodes>
<sockets>1</sockets><cores>64</cores><threads>1</threads></cpu><memory>{kib}</memory>
<network><name>default</name><bridge name="virbr0"/><ip address="192.168.122.1"
netmask="255.255.255.0"><dhcp><range start="192.168.122.2" end="192.168.122.254"/></dhcp>
</ip></network></node>"""

# --- timing every libvirt call -----------------------------------------------------------------

_libvirt_seconds = 0.0
_libvirt_lock = threading.Lock()


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _libvirt_seconds
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _libvirt_lock:
                _libvirt_seconds += time.perf_counter() - t0

    return wrapper


def _instrument() -> None:
    for cls in (libvirt.virConnect, libvirt.virDomain):
        for name, value in list(vars(cls).items()):
            if callable(value) and not name.startswith("_"):
                setattr(cls, name, _timed(value))
    libvirt.open = _timed(libvirt.open)


def _p(values: list[float], q: float) -> float:
    result = percentile(values, q)
    assert result is not None
    return result


def test_options(folder: Path, memory_mib: int = 1 << 30) -> dict[str, Any]:
    node = folder / "node.xml"
    node.write_text(NODE.format(kib=memory_mib * 1024), encoding="utf-8")
    return {
        "hypervisors": [{"uri": f"test://{node}", "max_creations": 64}],
        "domain": {"domain_type": "qemu", "boot": {"kernel": "/boot/vmlinuz"}, "nics": [{}]},
        "storage_dir": str(folder / "vms"),
        "blocking_workers": 16,
        "poll_retry": 0.01,
    }


# --- 1. overhead per operation -----------------------------------------------------------------


async def overhead(samples: int) -> tuple[list[float], list[float]]:
    """Per sequential spawn and terminate: wall time minus the time inside libvirt's methods."""
    global _libvirt_seconds
    folder = Path(tempfile.mkdtemp(prefix="bench-lv-"))
    backend = load_backend("libvirt", test_options(folder), pool="p")
    guarded = GuardedBackend(backend, call_timeout=30, poll_interval=0.01)
    spawn, terminate = [], []
    try:
        for i in range(samples):
            spec = VMSpec(f"vm-{i}", "p", i, {"memory_mib": 512, "vcpus": 1})
            _libvirt_seconds = 0.0
            t0 = time.perf_counter()
            handle = await guarded.spawn(spec)
            spawn.append(time.perf_counter() - t0 - _libvirt_seconds)
            await guarded.wait_up(handle, timeout=10)
            _libvirt_seconds = 0.0
            t0 = time.perf_counter()
            await guarded.terminate(handle)
            terminate.append(time.perf_counter() - t0 - _libvirt_seconds)
    finally:
        await backend.aclose()
        shutil.rmtree(folder, ignore_errors=True)
    return spawn, terminate


# --- 2. spawn efficiency -----------------------------------------------------------------------


async def backend_alone(n: int, concurrency: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-lv-"))
    backend = load_backend("libvirt", test_options(folder), pool="p")
    guarded = GuardedBackend(backend, call_timeout=30, poll_interval=0.01, max_concurrency=64)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            handle = await guarded.spawn(VMSpec(f"vm-{i}", "p", i, {"memory_mib": 64, "vcpus": 1}))
            await guarded.wait_up(handle, timeout=60)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0
    finally:
        await backend.aclose()
        shutil.rmtree(folder, ignore_errors=True)


async def through_controller(n: int, starting: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-lv-"))
    pool = {
        "backend": {"type": "libvirt", **test_options(folder)},
        "max": n,
        "max_starting": starting,
        "min_ready": n,
        "poll_interval": 0.01,
        "livecheck": {"period": 3600},
        "template": {"memory_mib": 64, "vcpus": 1},
    }
    config = parse_config({"store": "memory://", "pools": {"p": pool}}, env={})
    ctl = await Controller.create(config, tick=60)
    t0 = time.perf_counter()
    await ctl.start()
    try:
        while (await ctl.get_pool("p")).vms.get("ready", 0) < n:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError("the pool did not fill")
            await asyncio.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        await ctl.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- 3. real TCG guests ------------------------------------------------------------------------


def _real_options(folder: Path, kernel: Path, initrd: Path) -> dict[str, Any]:
    from guest import CMDLINE  # the slow tests' tiny guest

    return {
        "hypervisors": [{"uri": "qemu:///system", "max_creations": 8}],
        "domain": {
            "domain_type": "qemu",
            "boot": {
                "kernel": str(kernel),
                "initrd": str(initrd),
                "cmdline": CMDLINE,
            },
            "nics": [{"type": "user"}],
            "disks": [{"size_gib": 1}],
        },
        "readiness": {"method": "console"},
        "storage_dir": str(folder / "vms"),
        "poll_retry": 0.1,
    }


async def corral_boot(folder: Path, options: dict[str, Any], n: int, rep: int) -> float:
    """Median time from a ticket's creation to its VM assigned (up), n tickets at once, on the
    user's path: ``corral serve`` in its own process (SQLite store), n HTTP clients each creating
    a ticket and long-polling it (the server's start-up is not timed)."""
    import json

    import httpx

    from corral.api.server import free_port
    from corral.client.aio import AsyncClient

    pool = {
        "backend": {"type": "libvirt", **options},
        "max": n,
        "max_starting": n,
        "min_ready": 0,
        "poll_interval": 0.1,
        "spawn_timeout": 900,
        "template": {"memory_mib": 160, "vcpus": 1},
        "livecheck": {"period": 3600},
    }
    config = folder / f"c{n}-{rep}.yaml"
    store = f"sqlite:///{folder / f'c{n}-{rep}.db'}"
    config.write_text(json.dumps({"store": store, "pools": {"p": pool}}), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / f"serve-{n}-{rep}.log", "wb"),  # the child keeps it open
        cwd=folder,
    )
    try:
        async with httpx.AsyncClient(timeout=5) as probe:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if (await probe.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"corral serve did not start (see {folder}/serve-*.log)")
                await asyncio.sleep(0.05)

        ids: list[str] = []

        async def one() -> float:
            async with AsyncClient(url, timeout=60) as client:
                t0 = time.perf_counter()
                ticket = await client.create_ticket(pool="p", owner="bench")
                ids.append(ticket.id)
                await client.wait_ticket(ticket.id, timeout=900)
                return time.perf_counter() - t0

        cpu0 = _cpu_seconds(server.pid)
        # the tickets are closed once every guest is up, as virsh's guests are destroyed only
        # then: a guest released early would give the others its CPU
        times = await asyncio.gather(*(one() for _ in range(n)))
        async with AsyncClient(url, timeout=60) as client:
            for ticket_id in ids:
                await client.close_ticket(ticket_id)
        print(
            f"   corral serve: {_cpu_seconds(server.pid) - cpu0:.2f} s of CPU while {n} guest(s)"
            f" booted ({max(times):.1f} s)",
            flush=True,
        )
        return statistics.median(times)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        _destroy_pool("p")
        shutil.rmtree(folder / "vms", ignore_errors=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _destroy_pool(pool: str) -> None:
    conn = libvirt.open("qemu:///system")
    for dom in conn.listAllDomains():
        try:
            mark = domxml.parse_mark(dom.XMLDesc(0))
            if mark is None or mark.pool != pool:
                continue
            persistent = dom.isPersistent()  # a transient domain vanishes once destroyed
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
        except libvirt.libvirtError as exc:  # the controller's own terminate got there first
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    conn.close()


async def virsh_boot(folder: Path, options: dict[str, Any], n: int) -> float:
    """Median time from ``virsh create`` to the readiness line, n guests at once, with the XML
    and per-VM files corral would make (prepared beforehand, not timed)."""
    backend = load_backend("libvirt", options, pool="plain")
    assert isinstance(backend, LibvirtBackend)
    xmls, logs = [], []
    for i in range(n):
        spec = VMSpec(f"plain-{i}", "plain", i, {"memory_mib": 160, "vcpus": 1})
        vm_folder = storage.vm_dir(backend.root, "plain", spec.name)
        paths, log = storage.prepare(vm_folder, backend.devices.drives, console=True)
        xml = folder / f"plain-{i}.xml"
        xml.write_text(domxml.build(backend.domain_spec(spec, "h0", paths, log)), encoding="utf-8")
        xmls.append(xml)
        logs.append(Path(log or ""))
    await backend.aclose()

    async def one(xml: Path, log: Path) -> float:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "virsh",
            "-q",
            "-c",
            "qemu:///system",
            "create",
            str(xml),
            stdout=subprocess.DEVNULL,
        )
        await proc.wait()
        while "CORRAL-READY" not in storage.read_tail(log):
            await asyncio.sleep(0.1)
        return time.perf_counter() - t0

    try:
        times = await asyncio.gather(*(one(x, log) for x, log in zip(xmls, logs, strict=True)))
        return statistics.median(times)
    finally:
        _destroy_pool("plain")
        shutil.rmtree(folder / "vms", ignore_errors=True)


async def real(counts: list[int], reps: int) -> None:
    from guest import build  # the slow tests' tiny guest

    print(
        f"3. real guests, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-lv-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        tiny = build(folder)
        options = _real_options(folder, tiny.kernel, tiny.initrd)
        for n in counts:
            ours, plain = [], []
            for rep in range(reps):  # interleaved, the order alternating: load hits both alike
                if rep % 2:
                    ours.append(await corral_boot(folder, options, n, rep))
                    plain.append(await virsh_boot(folder, options, n))
                else:
                    plain.append(await virsh_boot(folder, options, n))
                    ours.append(await corral_boot(folder, options, n, rep))
            a, b = statistics.median(ours), statistics.median(plain)
            extra = (a / b - 1) * 100
            verdict = "OK" if extra < 5 else "MISSED"
            print(
                f"3. {n} TCG guest(s) at once: acquire->up median {a:.2f} s, plain virsh create "
                f"{b:.2f} s: corral adds {extra:+.1f} % (target < 5 %: {verdict}; {reps} reps; "
                f"corral {[round(x, 2) for x in ours]}, virsh {[round(x, 2) for x in plain]}; "
                f"load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_driver_parts(quick: bool) -> None:
    """Parts 1 and 2, on the test driver."""
    _instrument()
    spawn, terminate = await overhead(200 if quick else 1000)
    print(
        f"1. corral overhead beyond libvirt's calls (test driver, sequential): spawn p50 "
        f"{_p(spawn, 50) * 1000:.2f} ms p99 {_p(spawn, 99) * 1000:.2f} ms; terminate p50 "
        f"{_p(terminate, 50) * 1000:.2f} ms p99 {_p(terminate, 99) * 1000:.2f} ms",
        flush=True,
    )
    n = 1000
    alone = await backend_alone(n, 50)
    full = await through_controller(n, 50)
    eff = alone / full
    verdict = "OK" if eff >= 0.9 else "MISSED"
    print(
        f"2. 1,000 VMs, max_starting 50 (test driver): backend alone {alone:.2f} s, through the "
        f"controller {full:.2f} s: efficiency {eff:.3f} (target >= 0.9: {verdict})",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and repetitions")
    parser.add_argument("--no-real", action="store_true", help="skip the real QEMU guests")
    parser.add_argument("--real-only", action="store_true", help="only the real QEMU guests")
    parser.add_argument("--counts", default="1,4,8", help="parallel guests for part 3")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of part 3 (3)")
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if not args.real_only:
        await test_driver_parts(args.quick)
    if args.no_real:
        return
    answered = subprocess.run(
        ["virsh", "-c", "qemu:///system", "version"], capture_output=True, check=False
    )
    if answered.returncode != 0:
        print("3. skipped: no libvirtd answers on qemu:///system (start libvirtd and virtlogd)")
        return
    if os.geteuid() != 0:
        print("3. skipped: needs root (files under /var/tmp relabelled by libvirt)")
        return
    counts = [int(c) for c in args.counts.split(",")]
    await real(counts, args.reps or (1 if args.quick else 3))


if __name__ == "__main__":
    asyncio.run(main())
