"""The EC2 backend under the faults issue 13 names, against moto's EC2 server: an answer that
arrives after the read timeout, the server paused (SIGSTOP) in the middle of a storm, every kind
of failure checked for the secret, and what a create asks for (spot or on-demand, the address).

Each test names the breakage it catches.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Handle, PollStatus
from corral.backends.cloud.ec2 import EC2Backend
from corral.backends.guard import GuardedBackend

from ..conftest import spec, wait_for
from .cloudsim import FAKE_CREDENTIALS, FaultProxy, MotoServer, ec2_client, live_instances
from .conftest import ec2_options, make_ec2

pytestmark = pytest.mark.usefixtures("cleanup")

SECRET = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


# --- a create whose answer comes after the read timeout ------------------------------------


async def test_create_answered_after_the_read_timeout_is_not_made_twice(
    proxy: FaultProxy, ec2_proxied: EC2Backend, moto: MotoServer, namespace: str
) -> None:
    """moto makes the instance, the proxy holds the answer past the client's read timeout
    (2 s): botocore raises ReadTimeoutError, the outcome is unknown. moto ignores ClientToken
    (moto 5 stores it, never looks it up), so only the look-up by the ``corral:vm`` tag stands
    between the retry and a second instance.

    Breakage caught: a read timeout taken for a definite failure (the spawn fails although the
    instance exists), or retried without the look-up (RunInstances twice, two instances)."""
    proxy.set(late_answer=1, late_by=3.0)
    guard = GuardedBackend(ec2_proxied, call_timeout=30, poll_interval=0.02)
    handle = await guard.spawn(spec("p-000001"))
    assert (await guard.wait_up(handle, 30)).status is PollStatus.UP
    assert proxy.traffic.late == 1
    assert proxy.traffic.calls["RunInstances"] == 1
    assert live_instances(moto.url, namespace=namespace) == {"p-000001": [handle.ref]}


# --- the API paused in the middle of a storm -----------------------------------------------


async def test_api_paused_in_a_storm_leaks_nothing(
    moto: MotoServer, ami: str, namespace: str
) -> None:
    """Sixteen spawns at once; moto is SIGSTOPped once creates are on the wire, for 7 s (longer
    than the spawn timeout, 5 s, so the spawns caught in the pause fail), then SIGCONTed:
    connections are accepted, nothing answers, calls time out (read timeout 2 s), and on
    SIGCONT moto runs the requests it queued, creates included, whose callers gave up long ago.
    Every spawn that failed is rolled back as the controller does (terminate by name until
    confirmed); then one leak sweep runs as reconciliation does (``list()`` minus the VMs the
    store knows alive).

    A create queued in the paused server can land *after* its rollback looked for it: that is
    what the sweep is for, and why every instance carries its tags from the create call on.

    Breakage caught: an instance left in the cloud that corral does not know (a create whose
    answer was lost and that neither the rollback nor the sweep finds), a VM with two
    instances, or a spawn reported up with an instance that is gone."""
    backend = make_ec2(
        moto.url,
        ami,
        namespace=namespace,
        read_timeout=2.0,
        connect_timeout=2.0,
        max_attempts=4,
        describe_interval=0.1,
    )
    guard = GuardedBackend(
        backend,
        call_timeout=30,
        timeouts={"spawn": 5.0},
        max_concurrency=48,
        poll_interval=0.05,
    )

    async def one(i: int) -> Handle | None:
        name = f"p-{i:06d}"
        try:
            handle = await guard.spawn(spec(name, id_in_pool=i))
            result = await guard.wait_up(handle, timeout=10)
            if result.status is PollStatus.UP:
                return handle
        except exceptions.BackendError:
            pass
        async with asyncio.timeout(90):
            await guard.terminate_until_confirmed(Handle(name), base_delay=0.1, max_delay=1.0)
        return None

    async def outage() -> None:
        # pause with creates on the wire: counted in the SDK thread right before each request
        await wait_for(lambda: backend.calls["run_instances"] >= 4, 30, "creates under way")
        moto.pause()
        try:
            await asyncio.sleep(7.0)
        finally:
            moto.resume()

    assert live_instances(moto.url, namespace=namespace) == {}  # moto's first describe is slow
    assert await guard.list() == []  # the client's models loaded before the clock matters
    try:
        results = await asyncio.gather(outage(), *(one(i) for i in range(16)))
    finally:
        moto.resume()  # never leave the session's server stopped
    survivors = {h.name: h for h in results[1:] if h is not None}
    failed = 16 - len(survivors)
    assert failed > 0, "the pause failed no spawn: the test tested nothing"
    await asyncio.sleep(1.0)  # moto has run what it queued
    for handle in await guard.list():  # the sweep: whatever the store does not know alive
        if survivors.get(handle.name) != handle:
            await guard.terminate_until_confirmed(handle, base_delay=0.1, max_delay=1.0)
    for name, handle in survivors.items():  # a survivor's duplicates go at its next poll
        assert (await guard.poll(handle)).status is PollStatus.UP, name
    expected = {name: [h.ref] for name, h in survivors.items()}
    assert live_instances(moto.url, namespace=namespace) == expected
    await guard.aclose()


# --- credentials ---------------------------------------------------------------------------


async def test_no_failure_of_any_kind_shows_the_secret(
    proxy: FaultProxy, moto: MotoServer, ami: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Throttling (retried, logged), a lost answer (looked up, adopted), a definite refusal
    (AuthFailure, 401) and the API unreachable, with every logger at DEBUG (botocore's too):
    the secret appears in no log record and no error, nor in any error's cause or context.

    Breakage caught: an error or log line built from botocore's exception text or request
    (the signed request, the credentials object), e.g. ``str(exc)`` of the client error with
    its cause chained."""
    caplog.set_level(logging.DEBUG)
    backend = make_ec2(proxy.url, ami, namespace=namespace, read_timeout=2.0, max_attempts=3)
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    errors: list[BaseException] = []
    try:
        proxy.set(throttle=2, lose_answer=1)
        handle = await guard.spawn(spec("p-000001"))
        assert (await guard.wait_up(handle, 30)).status is PollStatus.UP
        proxy.set(fail=10)
        with pytest.raises(exceptions.BackendError, match="AuthFailure") as refused:
            await guard.spawn(spec("p-000002"))
        errors.append(refused.value)
        proxy.set(fail=0, down=True)
        with pytest.raises(exceptions.BackendError) as unreachable:
            await guard.spawn(spec("p-000003"))
        errors.append(unreachable.value)
        proxy.set(down=False)
    finally:
        await guard.aclose()
    assert proxy.traffic.throttled == 2 and proxy.traffic.lost == 1 and proxy.traffic.failed
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            texts += [str(chain), repr(chain), getattr(chain, "message", "")]
            chain = chain.__cause__ or chain.__context__
    assert any("retry in" in t for t in texts), "the throttling retries were logged"
    assert not [t for t in texts if SECRET in t]


# --- what a create asks for ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spot", "address"), [(False, "private"), (True, "public"), (False, "public")]
)
async def test_market_and_address_are_the_configured_ones(
    moto: MotoServer, ami: str, namespace: str, tmp_path: Path, spot: bool, address: str
) -> None:
    """Breakage caught: an on-demand pool launched as spot (or a spot pool as on-demand, or
    without its maximum price), and the poll answering the other address than configured."""
    extra: dict[str, object] = {"spot": spot, "address": address}
    if spot:
        extra["spot_max_price"] = "0.25"
    raw = ec2_options(moto.url, ami, namespace=namespace, **extra)
    backend = load_backend("ec2", raw, pool="p", base_dir=tmp_path)
    assert isinstance(backend, EC2Backend)
    market = backend._run_params(spec("p-000001")).get("InstanceMarketOptions")
    if spot:
        assert market == {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
                "MaxPrice": "0.25",
            },
        }
    else:
        assert market is None
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    try:
        handle = await guard.spawn(spec("p-000001"))
        result = await guard.wait_up(handle, 30)
        answer = ec2_client(moto.url).describe_instances(InstanceIds=[handle.ref])
        inst = answer["Reservations"][0]["Instances"][0]
        assert (inst.get("InstanceLifecycle") == "spot") is spot
        private, public = inst["PrivateIpAddress"], inst["PublicIpAddress"]
        assert private != public
        assert result.address == (public if address == "public" else private)
    finally:
        await guard.aclose()
