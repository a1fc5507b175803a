"""The EC2 backend against moto's EC2 server: tags, the sweep's boundaries, idempotent creates,
throttling, batching, an unreachable API, and credentials that never leak.

Each test names the breakage it catches.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from pathlib import Path

import botocore.exceptions
import pytest

from corral import exceptions
from corral.backends import load_backend, validate_options
from corral.backends.base import Handle, PollStatus
from corral.backends.cloud import ratelimit
from corral.backends.cloud.ec2 import EC2Backend
from corral.backends.guard import GuardedBackend

from ..conftest import spec, wait_for
from .cloudsim import FAKE_CREDENTIALS, FaultProxy, MotoServer, ec2_client, live_instances
from .conftest import ec2_options, make_ec2

SECRET = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


def _guard(backend: EC2Backend, **kw: float) -> GuardedBackend:
    return GuardedBackend(backend, call_timeout=kw.pop("call_timeout", 30.0), poll_interval=0.02)


async def _up(guard: GuardedBackend, name: str, i: int = 0) -> Handle:
    handle = await guard.spawn(spec(name, id_in_pool=i))
    result = await guard.wait_up(handle, timeout=30)
    assert result.status is PollStatus.UP, result
    return handle


def _tags(url: str, instance_id: str) -> dict[str, str]:
    answer = ec2_client(url).describe_instances(InstanceIds=[instance_id])
    inst = answer["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["aws_secret_access_key", "aws_access_key_id", "secret_key"])
def test_credentials_in_the_config_are_refused_without_echoing_them(key: str) -> None:
    """Breakage caught: accepting inline credentials, or quoting them in the error or its cause."""
    raw = {**ec2_options("http://127.0.0.1:1", "ami-1"), key: SECRET}
    with pytest.raises(exceptions.ConfigError) as info:
        validate_options("ec2", raw)
    assert "credentials are never read" in info.value.message
    chain = f"{info.value} {info.value.__cause__!s} {info.value.__cause__!r}"
    assert SECRET not in chain


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"namespace": "Bad Name"}, "namespace"),
        ({"tags": {"corral:pool": "x"}}, "reserved"),
        ({"user_data": "a", "user_data_file": "b"}, "one of them"),
        ({"spot_max_price": "0.1"}, "spot"),
        ({"address": "ipv9"}, "address"),
        ({"region": ""}, "region"),
        ({"rate": 0}, "rate"),
        ({"bogus": 1}, "unknown option"),
    ],
)
def test_bad_options_are_named(change: dict[str, object], words: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=words):
        validate_options("ec2", {**ec2_options("http://127.0.0.1:1", "ami-1"), **change})


def test_missing_user_data_file_is_a_config_error(tmp_path: Path) -> None:
    raw = {**ec2_options("http://127.0.0.1:1", "ami-1"), "user_data_file": "nope.yaml"}
    with pytest.raises(exceptions.ConfigError, match=r"nope\.yaml"):
        load_backend("ec2", raw, pool="p", base_dir=tmp_path)


# --- what gets created ---------------------------------------------------------------------


async def test_instance_carries_tags_spot_and_user_data(
    moto: MotoServer, ami: str, namespace: str, tmp_path: Path
) -> None:
    """Breakage caught: a create without corral's tags (the sweep could not find it) or
    without the operator's spot/user-data settings."""
    (tmp_path / "init.yaml").write_text("#cloud-config\nruncmd: [echo hi]\n")
    raw = ec2_options(
        moto.url,
        ami,
        namespace=namespace,
        spot=True,
        user_data_file="init.yaml",
        tags={"team": "builds"},
        address="public",
    )
    backend = load_backend("ec2", raw, pool="p", base_dir=tmp_path)
    guard = _guard(backend)  # type: ignore[arg-type]
    try:
        handle = await _up(guard, "p-000001", 1)
        tags = _tags(moto.url, handle.ref)
        assert tags["corral:vm"] == "p-000001" and tags["corral:pool"] == "p"
        assert tags["corral:namespace"] == namespace and tags["Name"] == "p-000001"
        assert tags["corral:id-in-pool"] == "1" and tags["team"] == "builds"
        client = ec2_client(moto.url)
        inst = client.describe_instances(InstanceIds=[handle.ref])["Reservations"][0]
        assert inst["Instances"][0].get("InstanceLifecycle") == "spot"
        attr = client.describe_instance_attribute(InstanceId=handle.ref, Attribute="userData")
        assert attr["UserData"].get("Value")
        result = await guard.poll(handle)
        assert result.address == inst["Instances"][0]["PublicIpAddress"]
    finally:
        await guard.aclose()


# --- the sweep's boundaries ----------------------------------------------------------------


async def test_sweep_terminates_a_leaked_tagged_instance_and_spares_everything_else(
    moto: MotoServer, ami: str, namespace: str
) -> None:
    """Breakage caught: ``list()`` returning untagged instances, another pool's or another
    namespace's (the sweep would destroy machines corral never made), or missing a leak."""
    client = ec2_client(moto.url)
    untagged = client.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]
    spec_tags = [
        {"Key": "corral:namespace", "Value": namespace},
        {"Key": "corral:pool", "Value": "other"},
        {"Key": "corral:vm", "Value": "other-1"},
    ]
    other_pool = client.run_instances(
        ImageId=ami,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": spec_tags}],
    )["Instances"][0]
    # a leak: an instance of this pool created by an earlier controller that crashed
    earlier = make_ec2(moto.url, ami, namespace=namespace)
    leaked = await earlier.spawn(spec("p-000009", id_in_pool=9))
    await earlier.aclose()

    backend = make_ec2(moto.url, ami, namespace=namespace)
    guard = _guard(backend)
    try:
        known = await _up(guard, "p-000001", 1)
        listed = await guard.list()
        assert {h.name for h in listed} == {"p-000001", "p-000009"}
        sweep = [h for h in listed if h.name != "p-000001"]  # the store knows p-000001 only
        assert [h.name for h in sweep] == ["p-000009"]
        for handle in sweep:
            await guard.terminate_until_confirmed(handle, attempts=5, base_delay=0.01)
        everything = live_instances(moto.url)
        assert all(leaked.ref not in ids for ids in everything.values())
        assert untagged["InstanceId"] in everything[""]
        assert other_pool["InstanceId"] in everything["other-1"]
        assert live_instances(moto.url, pool="p", namespace=namespace) == {"p-000001": [known.ref]}
    finally:
        await guard.aclose()
    for extra in (untagged, other_pool):
        client.terminate_instances(InstanceIds=[extra["InstanceId"]])


# --- idempotent creates --------------------------------------------------------------------


async def test_create_whose_answer_was_lost_is_not_made_twice(
    proxy: FaultProxy, ec2_proxied: EC2Backend, moto: MotoServer, namespace: str
) -> None:
    """moto ignores ClientToken, so this catches dropping the look-up by name before a retry:
    the retried RunInstances would make a second instance."""
    proxy.set(lose_answer=1)
    guard = _guard(ec2_proxied)
    handle = await _up(guard, "p-000001")
    assert proxy.traffic.lost == 1 and proxy.traffic.calls["RunInstances"] == 1
    assert live_instances(moto.url, namespace=namespace) == {"p-000001": [handle.ref]}


async def test_terminate_waits_for_a_create_still_in_flight(
    proxy: FaultProxy, moto: MotoServer, ami: str, namespace: str
) -> None:
    """The guard gives up on a slow create (its thread keeps going) and the rollback terminates
    the VM by name at once. Breakage caught: terminate not waiting for the create in flight
    (it would find nothing, and the instance created a moment later would leak).

    The spawn's timeout must outlast the look-up's describe before the create, or the guard
    gives up before any create is in flight (0.3 s did on a loaded machine, load 8-12); the
    create's read timeout must outlast the hang (the create is slow, not lost)."""
    backend = make_ec2(proxy.url, ami, namespace=namespace, read_timeout=20.0)
    proxy.set(hang=5.0, hang_actions=frozenset({"RunInstances"}))
    guard = GuardedBackend(backend, call_timeout=30, timeouts={"spawn": 2.0})
    try:
        with pytest.raises(exceptions.BackendTimeout):
            await guard.spawn(spec("p-000001"))
        await guard.terminate(Handle("p-000001"))  # what the spawn's rollback does
    finally:
        await backend.aclose()
    assert proxy.traffic.calls["RunInstances"] == 1
    assert live_instances(moto.url, namespace=namespace) == {}


async def test_a_call_too_late_for_its_slot_is_not_sent_and_asks_for_a_new_one(
    proxy: FaultProxy, ami: str, namespace: str, monkeypatch: pytest.MonkeyPatch, cleanup: None
) -> None:
    """The limiter finds each create and describe late for its cluster slot once, at botocore's
    last step before the request leaves: the call is not sent, takes a new slot and goes; it
    costs no attempt (``max_attempts: 1``). Breakages caught: a late call sent anyway (the
    proxy would count it twice), a missed slot counted as a failed attempt (the spawn fails)."""
    backend = make_ec2(proxy.url, ami, namespace=namespace, max_attempts=1)
    missed: list[ratelimit.Permit] = []
    check = backend.limiter.check_slot

    def late_once(permit: ratelimit.Permit) -> None:
        if permit.seq not in {p.seq for p in missed}:
            missed.append(permit)
            raise ratelimit.MissedSlot("late (test)")
        check(permit)

    monkeypatch.setattr(backend.limiter, "check_slot", late_once)
    try:
        handle = await backend.spawn(spec("p-000001"))
    finally:
        await backend.aclose()
    assert handle.ref.startswith("i-")
    assert len(missed) == 2  # the look-up's describe and the create, once each
    assert proxy.traffic.calls["RunInstances"] == 1
    assert proxy.traffic.calls["DescribeInstances"] == 1
    assert backend.calls["run_instances"] == 1


async def test_a_call_takes_its_slot_only_once_a_worker_thread_is_free(
    proxy: FaultProxy, ami: str, namespace: str
) -> None:
    """One worker thread, held by a slow describe: a second call waits for the thread before it
    takes a token of the rate limit, then goes. Breakage caught: the token taken first, the call
    waiting in the pool's queue past its slot (with a cluster: a missed slot, a wasted token;
    before the deadline: a late call in a burst)."""
    backend = make_ec2(proxy.url, ami, namespace=namespace, blocking_workers=1)
    proxy.set(hang=3.0, hang_actions=frozenset({"DescribeInstances"}))
    try:
        first = asyncio.ensure_future(backend._api("describe_instances"))
        await wait_for(lambda: backend.calls["describe_instances"] == 1, 10, "first call sent")
        granted = backend.limiter.granted
        second = asyncio.ensure_future(backend._api("describe_instances"))
        for _ in range(20):  # the second call runs as far as it can
            await asyncio.sleep(0.01)
        assert backend.limiter.granted == granted  # no token while no thread is free
        await asyncio.wait_for(asyncio.gather(first, second), 60)
        assert backend.limiter.granted == granted + 1
    finally:
        proxy.set(hang=0.0)
        await backend.aclose()


def _make_twin(url: str, ami: str, namespace: str, name: str) -> str:
    """An instance carrying the VM's name and pool, made behind the backend's back (a create
    whose answer was lost, surfacing late); its id."""
    tags = [
        {"Key": "corral:namespace", "Value": namespace},
        {"Key": "corral:pool", "Value": "p"},
        {"Key": "corral:vm", "Value": name},
    ]
    made = ec2_client(url).run_instances(
        ImageId=ami,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return str(made["Instances"][0]["InstanceId"])


@pytest.mark.parametrize("how", ["adopted", "lost_answer_not_visible_yet", "another_process"])
async def test_duplicate_instances_of_one_vm_are_terminated_at_poll(
    ec2: EC2Backend, moto: MotoServer, ami: str, namespace: str, how: str
) -> None:
    """A VM that may have a twin is polled by name, and the poll terminates the twin: one
    adopted by its spawn (an instance with its name existed: there may be more), one whose
    create lost its answer while the describe after it did not show the instance yet (EC2 is
    eventually consistent: the retry made a second one), one polled by a process that did not
    create it (a restarted controller). Breakage caught: a second instance with the VM's name
    living on unnoticed: its name is known to the store, so the sweep would never take it."""
    guard = _guard(ec2)
    if how == "adopted":
        first = _make_twin(moto.url, ami, namespace, "p-000001")
        handle = await guard.spawn(spec("p-000001"))
        assert handle.ref == first
    elif how == "lost_answer_not_visible_yet":
        real_start, real_existing, lost = ec2._start, ec2._existing, []

        async def start(priority: int, again: object, operation: str, kwargs: object) -> object:
            permit, future = await real_start(priority, again, operation, kwargs)  # type: ignore[arg-type]
            if operation == "run_instances" and not lost:
                lost.append(await asyncio.wrap_future(future))  # made; the answer goes astray
                failed: Future[dict[str, object]] = Future()
                failed.set_exception(botocore.exceptions.ReadTimeoutError(endpoint_url="x"))
                return permit, failed
            return permit, future

        async def existing(name: str) -> object:
            return None if len(lost) < 2 else await real_existing(name)

        ec2._start, ec2._existing = start, existing  # type: ignore[method-assign,assignment]
        handle = await guard.spawn(spec("p-000001"))
        ec2._start, ec2._existing = real_start, real_existing  # type: ignore[method-assign]
        assert len(live_instances(moto.url, namespace=namespace)["p-000001"]) == 2
    else:
        earlier = make_ec2(moto.url, ami, namespace=namespace)
        handle = await earlier.spawn(spec("p-000001"))
        await earlier.aclose()
    result = await guard.wait_up(handle, timeout=30)
    assert result.status is PollStatus.UP, result
    if how != "lost_answer_not_visible_yet":
        _make_twin(moto.url, ami, namespace, "p-000001")  # surfacing late, after the VM is up
        assert len(live_instances(moto.url, namespace=namespace)["p-000001"]) == 2
        assert (await guard.poll(handle)).status is PollStatus.UP
    assert live_instances(moto.url, namespace=namespace) == {"p-000001": [handle.ref]}


async def test_a_round_with_a_look_up_by_name_is_still_one_describe(ec2: EC2Backend) -> None:
    """Polls that may go by id and a spawn's look-up by name in one round: one describe, every
    VM by name. Breakage caught: a round asking by ids and by names in two calls (two
    describes in one interval for the pool where the target is at most one)."""
    asked: list[dict[str, object]] = []
    real_api = ec2._api

    async def recording(operation: str, **kwargs: object) -> dict[str, object]:
        if operation == "describe_instances":
            asked.append(kwargs)
        return await real_api(operation, **kwargs)

    guard = GuardedBackend(ec2, call_timeout=30, max_concurrency=64, poll_interval=0.02)
    made = await asyncio.gather(*(guard.spawn(spec(f"p-{i:06d}", id_in_pool=i)) for i in range(3)))
    ec2._api = recording  # type: ignore[method-assign]
    polled = await asyncio.gather(*(ec2.poll(h) for h in made), ec2._existing("p-000009"))
    assert [r.status for r in polled[:3]] == [PollStatus.UP] * 3 and polled[3] is None
    assert len(asked) == 1
    filters = asked[0]["Filters"]
    assert isinstance(filters, list)
    assert filters[0] == {"Name": "tag:corral:vm", "Values": [*(h.name for h in made), "p-000009"]}
    await asyncio.gather(*(guard.terminate(h) for h in made))


async def test_an_instance_polled_by_id_and_terminated_behind_our_back_fails_its_poll(
    ec2: EC2Backend, moto: MotoServer
) -> None:
    """A VM polled by instance id was seen; then its instance is terminated by someone else (a
    spot interruption, an operator). Breakage caught: the id-polled round not noting the
    instance as gone, so the poll answers "pending" (a describe lagging behind a create) for
    the whole ``not_found_grace`` (60 s) instead of failing the VM at once."""
    guard = _guard(ec2)
    handle = await _up(guard, "p-000001")
    ec2_client(moto.url).terminate_instances(InstanceIds=[handle.ref])
    result = await guard.poll(handle)
    assert result.status is PollStatus.FAILED, result


# --- throttling ----------------------------------------------------------------------------


async def test_throttling_is_retried_with_backoff_and_slows_the_account(
    proxy: FaultProxy, ec2_proxied: EC2Backend
) -> None:
    """Breakage caught: a throttling answer failing the spawn, or not pausing the account's
    shared bucket (other pools would keep hammering the API)."""
    proxy.set(throttle=4)
    guard = _guard(ec2_proxied)
    await _up(guard, "p-000001")
    assert proxy.traffic.throttled == 4
    assert ec2_proxied.limiter.bucket._paused_until > 0


async def test_endless_throttling_fails_with_a_clear_error(
    proxy: FaultProxy, moto: MotoServer, ami: str, namespace: str
) -> None:
    proxy.set(throttle=1000)
    backend = make_ec2(proxy.url, ami, namespace=namespace, max_attempts=3)
    try:
        with pytest.raises(exceptions.BackendError, match="RequestLimitExceeded") as info:
            await backend.spawn(spec("p-000001"))
        assert "3 attempt" in info.value.message
        assert proxy.traffic.throttled == 3
    finally:
        await backend.aclose()


# --- batching ------------------------------------------------------------------------------


async def test_concurrent_polls_share_one_describe_and_terminates_one_call(
    proxy: FaultProxy, ec2_proxied: EC2Backend
) -> None:
    """Breakage caught: one DescribeInstances per VM polled (N calls per interval instead of
    one), or one TerminateInstances per VM."""
    guard = GuardedBackend(ec2_proxied, call_timeout=30, max_concurrency=64, poll_interval=0.02)
    handles = await asyncio.gather(
        *(guard.spawn(spec(f"p-{i:06d}", id_in_pool=i)) for i in range(12))
    )
    before = proxy.traffic.calls["DescribeInstances"]
    results = await asyncio.gather(*(guard.poll(h) for h in handles))
    assert all(r.status is PollStatus.UP for r in results)
    assert proxy.traffic.calls["DescribeInstances"] - before <= 2  # one round, maybe one begun
    await asyncio.gather(*(guard.terminate(h) for h in handles))
    assert proxy.traffic.calls["TerminateInstances"] <= 2
    assert proxy.traffic.calls["RunInstances"] == 12


# --- the API unreachable in a storm --------------------------------------------------------


async def test_api_unreachable_in_a_storm_leaks_nothing(
    proxy: FaultProxy, ec2_proxied: EC2Backend, moto: MotoServer, namespace: str
) -> None:
    """Spawns run while the API goes away and comes back; every spawn that failed is rolled back
    the way the controller does (terminate by name until confirmed). Breakage caught: a create
    that happened without corral learning its id, and a terminate that did not find it."""
    guard = GuardedBackend(
        ec2_proxied,
        call_timeout=30,
        timeouts={"spawn": 3.0},
        max_concurrency=32,
        poll_interval=0.02,
    )
    proxy.set(lose_answer=3)

    async def one(i: int) -> Handle | None:
        name = f"p-{i:06d}"
        try:
            handle = await guard.spawn(spec(name, id_in_pool=i))
            result = await guard.wait_up(handle, timeout=5)
            if result.status is PollStatus.UP:
                return handle
        except exceptions.BackendError:
            pass
        async with asyncio.timeout(60):
            await guard.terminate_until_confirmed(Handle(name), base_delay=0.05, max_delay=0.5)
        return None

    async def outage() -> None:
        await asyncio.sleep(0.3)
        proxy.set(down=True)
        await asyncio.sleep(2.0)
        proxy.set(down=False)

    results = await asyncio.gather(outage(), *(one(i) for i in range(16)))
    survivors = {h.name: [h.ref] for h in results[1:] if h is not None}
    assert proxy.traffic.refused > 0
    assert live_instances(moto.url, namespace=namespace) == survivors


# --- credentials ---------------------------------------------------------------------------


async def test_credentials_never_appear_in_errors_or_logs(
    proxy: FaultProxy, ec2_proxied: EC2Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakage caught: an error or log line quoting botocore's request (with the signature
    material) or the secret itself."""
    caplog.set_level(logging.DEBUG)
    proxy.set(down=True)
    guard = GuardedBackend(ec2_proxied, call_timeout=10, timeouts={"spawn": 10})
    with pytest.raises(exceptions.BackendError) as info:
        await guard.spawn(spec("p-000001"))
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("corral"))
    texts = [info.value.message, str(info.value.__cause__), ours]
    assert not any(FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"] in t for t in texts)
    # botocore's own DEBUG log (opt-in) shows the key id in the signature header, never the secret
    assert SECRET not in caplog.text and SECRET not in "".join(texts)


async def test_the_readiness_poll_describes_only_the_vms_polled(ec2: EC2Backend) -> None:
    """Breakage caught: the poll's describe covering the whole pool (every live instance, seconds
    per call at 500 VMs) instead of the VMs being polled; or, for VMs this process created with
    one clean create, selecting them by a tag filter rather than by instance id, or putting the
    selecting filter after the pool's tag filters: moto evaluates filters in order, instance by
    instance, and a tag filter walks every tag of the account for each instance (about a second
    per call at 500 instances whatever the answer's size; 0.02 s by id first)."""
    asked: list[dict[str, object]] = []
    real_api = ec2._api

    async def recording(operation: str, **kwargs: object) -> dict[str, object]:
        if operation == "describe_instances":
            asked.append(kwargs)
        return await real_api(operation, **kwargs)

    ec2._api = recording  # type: ignore[method-assign]
    guard = GuardedBackend(ec2, call_timeout=30, max_concurrency=64, poll_interval=0.02)
    up = await asyncio.gather(*(guard.spawn(spec(f"p-{i:06d}", id_in_pool=i)) for i in range(4)))
    for handle in up:
        assert (await guard.poll(handle)).status is PollStatus.UP
    polled = await asyncio.gather(
        *(guard.spawn(spec(f"p-{i:06d}", id_in_pool=i)) for i in range(4, 7))
    )
    asked.clear()
    results = await asyncio.gather(*(guard.poll(h) for h in polled))
    assert all(r.status is PollStatus.UP for r in results)
    assert len(asked) == 1  # one round for the three polls
    filters = asked[0]["Filters"]
    assert isinstance(filters, list)
    assert filters[0] == {"Name": "instance-id", "Values": sorted(h.ref for h in polled)}
    assert not [f for f in filters if f["Name"] == "tag:corral:vm"]
    assert len(await guard.list()) == 7  # list() still describes the whole pool
    await asyncio.gather(*(guard.terminate(h) for h in [*up, *polled]))
