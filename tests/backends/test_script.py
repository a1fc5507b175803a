"""The script backend: no shell, identity in the environment, output protocol, timeouts, bounds."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Capability, Handle, PollStatus
from corral.backends.guard import GuardedBackend
from corral.backends.script import (
    EXAMPLES_DIR,
    ScriptBackend,
    decode_ref,
    encode_ref,
    example_options,
    stderr_excerpt,
)

from .conftest import spec, wait_for


def script(folder: Path, name: str, body: str) -> str:
    """Write an executable /bin/sh script and return its path."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def backend(folder: Path, **options: object) -> ScriptBackend:
    options.setdefault("delete", ["true"])
    loaded = load_backend("script", options, pool="fedora", base_dir=folder)
    assert isinstance(loaded, ScriptBackend)
    return loaded


RECORD = """
out="$1"; shift
for arg in "$@"; do printf 'arg=%s\\n' "$arg" >> "$out"; done
env | grep -E '^(CORRAL|RESALLOC)_' | sort >> "$out"
echo 10.1.2.3
"""


async def test_arguments_reach_the_command_literally_without_a_shell(tmp_path: Path) -> None:
    record = script(tmp_path, "record.sh", RECORD)
    out = tmp_path / "record.txt"
    dangerous = ["a; touch pwned1", "$(touch pwned2)", "`touch pwned3`", "*", "x > pwned4"]
    b = backend(tmp_path, new=[record, str(out), *dangerous])
    handle = await b.spawn(spec("vm-7", id_in_pool=7))
    assert (await b.poll(handle)).address == "10.1.2.3"
    lines = out.read_text().splitlines()
    assert [line[4:] for line in lines if line.startswith("arg=")] == dangerous
    assert not any(tmp_path.glob("pwned*"))


async def test_identity_is_in_corral_and_resalloc_variables(tmp_path: Path) -> None:
    record = script(tmp_path, "record.sh", RECORD)
    spawned, deleted = tmp_path / "new.txt", tmp_path / "delete.txt"
    b = backend(tmp_path, new=[record, str(spawned)], delete=[record, str(deleted)])
    handle = await b.spawn(spec("fedora-0007", pool="fedora", id_in_pool=7))
    env = set(spawned.read_text().splitlines())
    assert {
        "CORRAL_VM_NAME=fedora-0007",
        "CORRAL_POOL=fedora",
        "CORRAL_ID_IN_POOL=7",
        "RESALLOC_NAME=fedora-0007",
        "RESALLOC_POOL_ID=fedora",
        "RESALLOC_ID_IN_POOL=7",
    } <= env
    assert not any(line.startswith("CORRAL_VM_ADDRESS=") for line in env)  # not known yet
    assert any(line.startswith("CORRAL_TEMPLATE={") for line in env)
    await b.terminate(Handle.from_json(handle.to_json()))  # as persisted by the controller
    env = set(deleted.read_text().splitlines())
    assert {
        "CORRAL_VM_ADDRESS=10.1.2.3",
        "RESALLOC_ID_IN_POOL=7",
        "RESALLOC_NAME=fedora-0007",
    } <= env


async def test_unmodified_resalloc_style_script_works(tmp_path: Path) -> None:
    vms = tmp_path / "vms"
    vms.mkdir()
    script(tmp_path, "new", f'touch {vms}/"$RESALLOC_NAME"\necho 127.0.0.1\n')
    script(tmp_path, "delete", f'rm -f {vms}/"$RESALLOC_NAME"\n')
    b = backend(tmp_path, new=["./new"], delete=["./delete"])  # relative to the config folder
    handle = await b.spawn(spec("vm-1"))
    assert (vms / "vm-1").exists()
    await b.terminate(handle)
    assert not (vms / "vm-1").exists()


async def test_failed_new_carries_its_stderr(tmp_path: Path) -> None:
    failing = script(tmp_path, "fail.sh", "echo 'boom: quota exceeded' >&2\nexit 3\n")
    b = backend(tmp_path, new=[failing])
    with pytest.raises(
        exceptions.BackendError, match="exited with 3; stderr: boom: quota exceeded"
    ):
        await b.spawn(spec("vm-1"))


async def test_long_stderr_is_cut_to_its_end(tmp_path: Path) -> None:
    noisy = script(
        tmp_path,
        "noisy.sh",
        "head -c 100000 /dev/zero | tr '\\0' x >&2\necho THE-REAL-CAUSE >&2\nexit 1\n",
    )
    b = backend(tmp_path, new=[noisy])
    with pytest.raises(exceptions.BackendError) as info:
        await b.spawn(spec("vm-1"))
    message = info.value.message
    assert len(message) < 2300 and "THE-REAL-CAUSE" in message and "chars cut" in message


@pytest.mark.parametrize(
    "output", ["", "\\n10.0.0.1", "hello world!", "300.1.2.3", "-bad-.example.com", "ok 10.0.0.1"]
)
async def test_garbage_first_line_is_a_spawn_failure(tmp_path: Path, output: str) -> None:
    garbage = script(tmp_path, "garbage.sh", f"printf '%b' '{output}'\necho 'a warning' >&2\n")
    b = backend(tmp_path, new=[garbage])
    with pytest.raises(
        exceptions.BackendError, match=r"(?s)not an IP address or host name.*a warning"
    ):
        await b.spawn(spec("vm-1"))


@pytest.mark.parametrize("address", ["vm1.example.com", "::1", "192.168.0.10", "builder-7"])
async def test_addresses_and_host_names_are_accepted(tmp_path: Path, address: str) -> None:
    b = backend(tmp_path, new=["echo", address])
    handle = await b.spawn(spec("vm-1"))
    assert (await b.poll(handle)).address == address
    assert decode_ref(handle.ref) == (address, 0)


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}  # a zombie waiting for a reaper is dead too


HANGS = """
sleep 30 &
echo $! > "$1/child.pid"
echo $$ > "$1/parent.pid"
echo 'still booting' >&2
sleep 30
"""


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    hangs = script(tmp_path, "hangs.sh", HANGS)
    b = backend(tmp_path, new=[hangs, str(tmp_path)], timeouts={"new": 0.3})
    started = time.monotonic()
    with pytest.raises(
        exceptions.BackendTimeout, match=r"killed after 0\.3 s; stderr: still booting"
    ):
        await b.spawn(spec("vm-1"))
    assert time.monotonic() - started < 5
    pids = [int((tmp_path / f"{who}.pid").read_text()) for who in ("parent", "child")]
    await wait_for(lambda: all(_dead(pid) for pid in pids), what="script and its child killed")
    assert b.running == 0


async def test_cancellation_by_the_guard_kills_the_process_group(tmp_path: Path) -> None:
    hangs = script(tmp_path, "hangs.sh", HANGS)
    guard = GuardedBackend(backend(tmp_path, new=[hangs, str(tmp_path)]), call_timeout=0.3)
    with pytest.raises(exceptions.BackendTimeout):
        await guard.spawn(spec("vm-1"))
    pids = [int((tmp_path / f"{who}.pid").read_text()) for who in ("parent", "child")]
    await wait_for(lambda: all(_dead(pid) for pid in pids), what="script and its child killed")


async def test_processes_are_bounded_and_new_leaves_room_for_delete(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()
    body = (
        f'touch {started}/"$CORRAL_VM_NAME"\nwhile [ ! -e {gate} ]; do sleep 0.01; done\necho ::1\n'
    )
    gated = script(tmp_path, "gated.sh", body)
    b = backend(tmp_path, new=[gated], max_processes=4)  # 3 for new, 1 kept for the rest
    spawns = [asyncio.create_task(b.spawn(spec(f"vm-{i}"))) for i in range(8)]
    await wait_for(lambda: len(list(started.iterdir())) == 3, what="three scripts started")
    await asyncio.sleep(0.05)  # a fourth, unbounded start would show up here
    assert len(list(started.iterdir())) == 3 and b.running == 3
    await asyncio.wait_for(b.terminate(Handle("vm-old")), timeout=5)  # delete is not starved
    gate.touch()
    assert len(await asyncio.gather(*spawns)) == 8
    assert len(list(started.iterdir())) == 8


async def test_list_protocol(tmp_path: Path) -> None:
    lister = script(tmp_path, "list.sh", "printf 'vm-1\\n\\n  vm-2  \\nvm-1\\n'\n")
    b = backend(tmp_path, new=["echo", "::1"], list=[lister])
    assert [h.name for h in await b.list()] == ["vm-1", "vm-2"]


async def test_list_rejects_a_malformed_line(tmp_path: Path) -> None:
    lister = script(tmp_path, "list.sh", "echo vm-1\necho 'two words'\n")
    b = backend(tmp_path, new=["echo", "::1"], list=[lister])
    with pytest.raises(exceptions.BackendError, match="line 2 'two words' is not a VM name"):
        await b.list()


async def test_livecheck_follows_the_exit_status(tmp_path: Path) -> None:
    b = backend(tmp_path, new=["echo", "::1"], livecheck=["false"])
    assert Capability.LIVECHECK in b.capabilities
    assert await b.livecheck(Handle("vm-1")) is False


async def test_failed_delete_is_an_error_with_stderr(tmp_path: Path) -> None:
    failing = script(tmp_path, "delete.sh", "echo 'host unreachable' >&2\nexit 1\n")
    b = backend(tmp_path, new=["echo", "::1"], delete=[failing])
    with pytest.raises(exceptions.BackendError, match=r"delete for VM vm-1 exited with 1.*unreach"):
        await b.terminate(Handle("vm-1"))


async def test_commands_run_in_the_workdir(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    pwd = script(tmp_path / "work", "pwd.sh", "pwd > where.txt\necho ::1\n")
    b = backend(tmp_path, new=["./pwd.sh"], workdir="work")
    await b.spawn(spec("vm-1"))
    assert Path((tmp_path / "work" / "where.txt").read_text().strip()) == Path(pwd).parent


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"new": []}, "new: List should have at least 1 item"),
        ({"new": [""]}, "non-empty program name"),
        ({"new": ["./missing.sh"]}, "new: .*missing.sh is not an executable file"),
        ({"new": ["no-such-program-xyz"]}, "'no-such-program-xyz' not on PATH"),
        ({"new": ["true"], "workdir": "nowhere"}, "workdir .*nowhere is not a folder"),
        ({"new": ["true"], "lsit": ["true"]}, "lsit: unknown option"),
        ({"new": ["true"], "timeouts": {"new": 0}}, "timeouts.new: Input should be greater"),
        ({"new": "true"}, "new: Input should be a valid list"),
    ],
)
def test_bad_options_are_config_errors(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(exceptions.ConfigError, match=message):
        backend(tmp_path, **options)


def test_delete_is_required(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ConfigError, match="delete: Field required"):
        load_backend("script", {"new": ["true"]}, pool="p", base_dir=tmp_path)


def test_capabilities_follow_the_configured_commands(tmp_path: Path) -> None:
    assert backend(tmp_path, new=["true"]).capabilities == frozenset()
    full = backend(tmp_path, new=["true"], livecheck=["true"], release=["true"], list=["true"])
    # a livecheck also lets machines made elsewhere join (issue 15: checked before they serve)
    assert full.capabilities == {
        Capability.LIVECHECK,
        Capability.RELEASE,
        Capability.LIST,
        Capability.REGISTER,
    }
    assert Capability.REGISTER not in backend(tmp_path, new=["true"], list=["true"]).capabilities


def test_an_adopted_machine_is_known_by_its_name_and_address(tmp_path: Path) -> None:
    """Breakage caught: the adopted handle losing the address (its commands would not see
    ``CORRAL_VM_ADDRESS``) or a script backend without livecheck adopting."""
    checked = backend(tmp_path, new=["true"], livecheck=["true"])
    handle = checked.adopt("builder-9", "192.0.2.9")
    assert handle.name == "builder-9"
    assert decode_ref(handle.ref) == ("192.0.2.9", None)
    with pytest.raises(exceptions.CapabilityMissing):
        backend(tmp_path, new=["true"]).adopt("builder-9", "192.0.2.9")


def test_ref_encoding_round_trips_and_tolerates_garbage() -> None:
    assert decode_ref(encode_ref("10.0.0.1", 3)) == ("10.0.0.1", 3)
    for ref in ["", "not json", "[1]", '{"address": 1, "id_in_pool": true}']:
        assert decode_ref(ref) == (None, None)


def test_stderr_excerpt() -> None:
    assert stderr_excerpt("  \n") == "(no stderr)"
    assert stderr_excerpt("oops\n") == "oops"


async def test_example_scripts_keep_vms_as_files(tmp_path: Path) -> None:
    vms = tmp_path / "vms"
    guard = GuardedBackend(load_backend("script", example_options(vms), pool="p"))
    handle = await guard.spawn(spec("vm-1", id_in_pool=4))
    assert (await guard.wait_up(handle, 5)).status is PollStatus.UP
    assert (vms / "vm-1").read_text() == "pool=p\nid_in_pool=4\n"
    assert all(os.access(path, os.X_OK) for path in EXAMPLES_DIR.glob("*.sh"))
    await guard.release(handle)
    await guard.terminate(handle)
    assert list(vms.iterdir()) == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_hundreds_of_spawns_keep_file_descriptors_bounded(tmp_path: Path) -> None:
    b = backend(tmp_path, new=["echo", "::1"], max_processes=8)
    guard = GuardedBackend(b, max_concurrency=500)
    baseline = _open_fds()
    peak = baseline
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, _open_fds())
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    handles = await asyncio.gather(*(guard.spawn(spec(f"vm-{i}")) for i in range(100)))
    done = True
    await sampler
    assert len(handles) == 100
    assert peak - baseline <= 8 * 4  # a few pipes per running command, whatever the demand


async def test_commands_carry_the_store_marker_once_marked_and_never_an_inherited_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # breakage caught: unmarked commands (a restart could not find the orphaned ones) or a
    # marker inherited from the daemon's environment (another store's owner would kill them)
    monkeypatch.setenv("CORRAL_OWNER", "inherited")
    record = script(tmp_path, "record.sh", RECORD)
    out = tmp_path / "record.txt"
    b = backend(tmp_path, new=[record, str(out)])
    await b.spawn(spec("vm-1"))
    assert not [line for line in out.read_text().splitlines() if "CORRAL_OWNER" in line]
    out.unlink()
    b.mark("sqlite-0123")
    await b.spawn(spec("vm-2"))
    assert "CORRAL_OWNER=sqlite-0123" in out.read_text().splitlines()
