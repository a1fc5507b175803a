"""The libcloud backend's credentials (issue 13): a credentials file named in the configuration
is what signs the requests at the wire, and no failure shows the secret.

libcloud's EC2 driver talks to moto through the fault proxy, which records the access key id of
every request's SigV4 signature. The environment holds *other* (fake) AWS credentials all the
while, so a backend that ignored the file would be seen signing with those.

Each test names the breakage it catches.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import PollStatus
from corral.backends.cloud.libcloud import LibcloudBackend
from corral.backends.guard import GuardedBackend

from ..conftest import spec
from .cloudsim import FAKE_CREDENTIALS, FaultProxy, MotoServer, live_instances
from .libcloudsim import fix_moto_namespace
from .test_libcloud import ec2_driver_options

pytestmark = pytest.mark.usefixtures("cleanup")

FILE_KEY = "AKIACORRALFROMFILE01"
FILE_SECRET = "corral-file-secret-MUST-NOT-LEAK-0987654321"  # noqa: S105 - a fake
ENV_KEY = FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]


@pytest.fixture(autouse=True)
def _moto_xml(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_moto_namespace(monkeypatch)  # see libcloudsim: moto's namespace lacks a trailing slash


@pytest.fixture(scope="module", autouse=True)
def _empty_moto(moto_server: MotoServer) -> None:
    """libcloud's EC2 ``list_nodes`` reads every instance moto has: start from none."""
    moto_server.reset()


def _from_file(proxy: FaultProxy, namespace: str, path: Path, **over: object) -> LibcloudBackend:
    raw = ec2_driver_options(proxy.port, namespace, **over)
    raw.pop("key_env")
    raw.pop("secret_env")
    raw["credentials_file"] = path.name
    backend = load_backend("libcloud", raw, pool="p", base_dir=path.parent)
    assert isinstance(backend, LibcloudBackend)
    return backend


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
async def test_the_credentials_file_signs_the_requests(
    proxy: FaultProxy, moto: MotoServer, namespace: str, tmp_path: Path, suffix: str
) -> None:
    """Breakage caught: the file read but not handed to the driver (the environment's key signs
    instead), the key and the secret swapped, or a JSON file parsed as something else."""
    path = tmp_path / f"aws{suffix}"
    content = {"key": FILE_KEY, "secret": FILE_SECRET}
    path.write_text(
        json.dumps(content) if suffix == ".json" else f"key: {FILE_KEY}\nsecret: {FILE_SECRET}\n"
    )
    path.chmod(0o600)
    backend = _from_file(proxy, namespace, path)
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    try:
        handle = await guard.spawn(spec("p-000001"))
        assert (await guard.wait_up(handle, 30)).status is PollStatus.UP
        assert live_instances(moto.url, namespace=namespace) == {"p-000001": [handle.ref]}
    finally:
        await guard.aclose()
    assert set(proxy.traffic.key_ids) == {FILE_KEY}, proxy.traffic.key_ids
    assert ENV_KEY not in proxy.traffic.key_ids


async def test_no_libcloud_failure_shows_the_secret(
    proxy: FaultProxy,
    namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Throttling (retried), a definite refusal (AuthFailure 401) and the API unreachable,
    every logger at DEBUG: the file's secret is in no log record and no error chain.

    Breakage caught: an error or log line quoting the driver (its ``secret`` attribute), the
    credentials read from the file, or libcloud's request."""
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "aws.yaml"
    path.write_text(f"key: {FILE_KEY}\nsecret: {FILE_SECRET}\n")
    backend = _from_file(proxy, namespace, path, max_attempts=3)
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    errors: list[BaseException] = []
    try:
        proxy.set(throttle=2)
        handle = await guard.spawn(spec("p-000001"))
        assert (await guard.wait_up(handle, 30)).status is PollStatus.UP
        proxy.set(fail=10)
        with pytest.raises(exceptions.BackendError) as refused:
            await guard.spawn(spec("p-000002"))
        errors.append(refused.value)
        proxy.set(fail=0, down=True)
        with pytest.raises(exceptions.BackendError) as unreachable:
            await guard.spawn(spec("p-000003"))
        errors.append(unreachable.value)
        proxy.set(down=False)
    finally:
        await guard.aclose()
    assert proxy.traffic.throttled == 2 and proxy.traffic.failed and proxy.traffic.refused
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            texts += [str(chain), repr(chain), getattr(chain, "message", "")]
            chain = chain.__cause__ or chain.__context__
    assert any("AuthFailure" in t for t in texts), "the refusal says what the cloud said"
    assert not [t for t in texts if FILE_SECRET in t]
