"""The ``libcloud`` backend (SPEC §6, issue 13): any Apache Libcloud compute driver by name.

The driver is chosen by its libcloud provider name (``ec2``, ``openstack``, ``gce``, ...) with its
arguments; credentials come from environment variables or a credentials file *named* in the
configuration, never inline (:mod:`credentials`). Machines are recognised in one of two ways:

- ``identify: tags`` (default): created with corral's tags as the driver's metadata argument
  (``ex_metadata`` for EC2, OpenStack, GCE) and read back from ``node.extra["tags"]`` or
  ``node.extra["metadata"]``; the node's name is the VM's name;
- ``identify: name``, for drivers without metadata: the node's name is
  ``corral-<namespace>-<pool>--<vm>``, and only nodes so named are the pool's.

As for EC2: the account's shared rate limit, throttling retried with backoff, one ``list_nodes``
per ``list_interval`` shared by every poll, livecheck, list and look-up, a look-up by name before
every create and before a retried one, and a terminate that waits for a create in flight. Libcloud
has no batch delete: each node costs one ``destroy_node``. The SDK is blocking: it runs in the
backend's bounded thread pool.

Fencing (``FENCING``, with ``identify: tags`` only: a name records no token): a spawn given a
fence creates the node with ``corral:fence`` and ``corral:fence-holder`` in its metadata; a
fenced terminate checks the nodes of the shared ``list_nodes`` (``StaleFence``) and, when another
holder recorded their token, records its own first with the driver's ``ex_create_tags`` (EC2's
driver); a driver without it cannot record a survivor's token, which is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
from libcloud.compute.base import NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState

from corral import exceptions
from corral.backends import fencing
from corral.backends.base import (
    BackendOptions,
    Capability,
    Fence,
    FencedBackend,
    Handle,
    PollResult,
    PollStatus,
    VMSpec,
    is_valid_address,
)
from corral.backends.cloud import credentials
from corral.backends.cloud import ec2_model as errors
from corral.backends.cloud import tags as cloud_tags
from corral.backends.cloud.batching import Coalescer
from corral.backends.cloud.quota import QuotaAdmission, QuotaOptions, Usage
from corral.backends.cloud.ratelimit import MissedSlot, Permit, RateLimiter, limiter_for
from corral.backends.cloud.shared import SharedCloud, shared_for
from corral.backends.guard import backoff_delay

log = logging.getLogger(__name__)

Scalar = str | int | float | bool | None


class LibcloudOptions(BackendOptions):
    """Options of the ``libcloud`` backend."""

    driver: str = pydantic.Field(min_length=1, description="libcloud provider name, e.g. ec2")
    driver_args: dict[str, Scalar] = pydantic.Field(default_factory=dict)
    key_env: str | None = pydantic.Field(None, description="environment variable with the key")
    secret_env: str | None = pydantic.Field(None, description="... and with the secret")
    credentials_file: str | None = pydantic.Field(None, description="YAML/JSON: key, secret")
    image: str = pydantic.Field(min_length=1, description="image id")
    size: str = pydantic.Field(min_length=1, description="size (flavour, instance type) id")
    location: str | None = None
    networks: list[str] = pydantic.Field(default_factory=list)
    key_pair: str | None = None
    key_pair_arg: str = "ex_keyname"
    metadata: dict[str, str] = pydantic.Field(default_factory=dict)
    metadata_arg: str = "ex_metadata"
    networks_arg: str = "networks"
    create_args: dict[str, Scalar | list[str]] = pydantic.Field(default_factory=dict)
    identify: Literal["tags", "name"] = "tags"
    namespace: str = "default"
    address: Literal["private", "public"] = "public"
    list_interval: float = pydantic.Field(2.0, gt=0, le=300)
    rate: float = pydantic.Field(10.0, gt=0)
    burst: float = pydantic.Field(5.0, ge=1)
    account: str | None = None
    max_attempts: int = pydantic.Field(8, ge=1, le=100)
    backoff_base: float = pydantic.Field(0.5, gt=0)
    backoff_max: float = pydantic.Field(20.0, gt=0)
    not_found_grace: float = pydantic.Field(60.0, ge=0)
    quota: QuotaOptions | None = None
    """Limits admission respects (instances, and the size's vCPUs and RAM)."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: object) -> object:
        return credentials.refuse_inline_credentials(
            data, "name them with key_env/secret_env or credentials_file"
        )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> LibcloudOptions:
        if (self.key_env is None) == (self.credentials_file is None):
            raise ValueError("give exactly one of key_env (with secret_env) or credentials_file")
        cloud_tags.check_namespace(self.namespace)
        cloud_tags.check_user_tags(self.metadata)
        return self


@dataclass(frozen=True, slots=True)
class _Node:
    """What corral keeps of a libcloud node."""

    id: str
    vm: str
    state: str
    public: tuple[str, ...] = ()
    private: tuple[str, ...] = ()
    raw: Any = field(default=None, compare=False, repr=False)
    fence: Fence | None = None
    """The fence the node's metadata records (``identify: tags``)."""

    @property
    def alive(self) -> bool:
        return self.state not in (NodeState.TERMINATED, "terminated")


_PENDING_STATES = {NodeState.PENDING, NodeState.STARTING, NodeState.REBOOTING, NodeState.UNKNOWN}


class LibcloudBackend(FencedBackend):
    """VMs as nodes of any libcloud compute driver."""

    type_name: ClassVar[str] = "libcloud"
    options_model: ClassVar[type[BackendOptions]] = LibcloudOptions

    def __init__(self, options: BackendOptions, *, pool: str, base_dir: Path | None = None) -> None:
        """Resolve the credentials and the driver class; no network call yet."""
        super().__init__(options, pool=pool, base_dir=base_dir)
        assert isinstance(options, LibcloudOptions)  # noqa: S101 - validated by the registry
        self.opts = options
        self.capabilities = self.capabilities | {Capability.LIST, Capability.LIVECHECK}
        if options.identify != "tags":  # a node's name has no room for a token
            self.capabilities = self.capabilities - {Capability.FENCING}
        try:
            self._driver_cls = get_driver(options.driver)
        except (AttributeError, ValueError) as exc:
            raise exceptions.ConfigError(
                f"backend 'libcloud': no libcloud compute driver named {options.driver!r}"
            ) from exc
        if options.credentials_file is not None:
            path = Path(options.credentials_file)
            self._key, self._secret = credentials.from_file(
                path if path.is_absolute() else self.base_dir / path
            )
        else:
            assert options.key_env is not None  # noqa: S101 - checked by the options model
            self._key, self._secret = credentials.from_environment(
                options.key_env, options.secret_env
            )
        key = options.account or f"{options.driver}:{options.key_env or options.credentials_file}"
        self.account_key = f"libcloud:{key}"
        self.limiter: RateLimiter = limiter_for(self.account_key, options.rate, options.burst)
        self.calls: Counter[str] = Counter()
        self._usage: Usage | None = None
        self.shared: SharedCloud | None = None
        """The cluster's buckets and quota ledgers (a PostgreSQL store), once attached."""
        self.quota: QuotaAdmission | None = None
        if options.quota is not None:
            self.quota = QuotaAdmission(
                pool=pool, account_key=self.account_key, quota=options.quota, sizer=self.vm_usage
            )
        self._driver: Any = None
        self._driver_lock = threading.Lock()
        self._sending = threading.local()
        """The permit of the call each SDK thread is making (checked before the request leaves,
        :meth:`_before_send`)."""
        self._creating: dict[str, Future[Any]] = {}
        self._created: dict[str, float] = {}
        self._rng = random.Random()  # noqa: S311 - jitter
        self._lister: Coalescer[str, list[_Node]] = Coalescer(
            self._list_round, min_interval=max(options.list_interval, 5.0 / options.rate)
        )

    # --- names and identity ----------------------------------------------------------------

    def _prefix(self) -> str:
        return f"corral-{self.opts.namespace}-{self.pool}--"

    def node_name(self, vm: str) -> str:
        """The node name a VM is created with."""
        return vm if self.opts.identify == "tags" else self._prefix() + vm

    @staticmethod
    def _meta(node: Any) -> dict[str, str]:
        extra = getattr(node, "extra", None) or {}
        meta = extra.get("tags") or extra.get("metadata") or {}
        return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, Mapping) else {}

    def _vm_of(self, node: Any) -> str | None:
        """The VM name of one of the pool's nodes, ``None`` for anybody else's node."""
        name = getattr(node, "name", None)
        if not isinstance(name, str):
            return None
        if self.opts.identify == "name":
            return name[len(self._prefix()) :] or None if name.startswith(self._prefix()) else None
        extra = getattr(node, "extra", None) or {}
        meta = extra.get("tags") or extra.get("metadata") or {}
        if not isinstance(meta, Mapping) or not cloud_tags.is_ours(
            {str(k): str(v) for k, v in meta.items()}, self.opts.namespace, self.pool
        ):
            return None
        return cloud_tags.vm_name({str(k): str(v) for k, v in meta.items()})

    # --- quotas and the cluster -----------------------------------------------------------

    def attach_store(self, url: str) -> None:
        """On a PostgreSQL store, make the account's rate limit and the quota cluster-wide."""
        if self.shared is not None:
            return
        self.shared = shared_for(url)
        if self.shared is not None:
            self.limiter.share(self.account_key, self.shared)
            if self.quota is not None:
                self.quota.book = self.shared

    def admission(self) -> QuotaAdmission | None:
        """The pool's quota, when it declares one (the guard admits every spawn against it)."""
        return self.quota

    async def vm_usage(self) -> Usage:
        """What one VM counts against the quota: the size's RAM and vCPUs (``list_sizes``, once),
        unless the quota overrides them. A limit on a resource the driver does not report and
        the quota does not override is a ``ConfigError``."""
        if self._usage is None:
            quota = self.opts.quota
            assert quota is not None  # noqa: S101 - only a quota asks for sizes
            vcpus, memory = quota.vm_vcpus, quota.vm_memory_mib
            if vcpus is None or memory is None:
                sizes = await self._api("list_sizes")
                size = next((z for z in sizes or [] if str(z.id) == self.opts.size), None)
                if size is None:
                    raise exceptions.ConfigError(
                        f"backend 'libcloud': the driver lists no size {self.opts.size!r}; "
                        "give quota.vm_vcpus and quota.vm_memory_mib"
                    )
                memory = memory if memory is not None else _int(getattr(size, "ram", None))
                vcpus = vcpus if vcpus is not None else _size_vcpus(size)
            for what, value, limit in (
                ("vcpus", vcpus, quota.vcpus),
                ("memory_mib", memory, quota.memory_mib),
            ):
                if value is None and limit is not None:
                    raise exceptions.ConfigError(
                        f"backend 'libcloud': size {self.opts.size!r} does not say its {what}; "
                        f"give quota.vm_{what}"
                    )
            self._usage = Usage(1, vcpus or 0, memory or 0)
        return self._usage

    # --- the SDK, in threads ---------------------------------------------------------------

    def _driver_sync(self) -> Any:
        with self._driver_lock:
            if self._driver is None:
                args: dict[str, Any] = dict(self.opts.driver_args)
                if self._secret is not None:
                    driver = self._driver_cls(self._key, self._secret, **args)
                else:
                    driver = self._driver_cls(self._key, **args)
                self._hook_sending(driver)
                self._driver = driver
            return self._driver

    def _hook_sending(self, driver: Any) -> None:
        """Check the slot's deadline in libcloud's ``pre_connect_hook`` of the driver's connection:
        its last step before the request goes to the socket, after the request is built (and, for
        AWS's signature v4, signed). A driver without one (the dummy driver makes no request)
        is checked at the gate only."""
        connection = getattr(driver, "connection", None)
        original = getattr(connection, "pre_connect_hook", None)
        if connection is None or original is None:
            return

        def hook(params: Any, headers: Any) -> Any:
            answer = original(params, headers)
            self._before_send()
            return answer

        connection.pre_connect_hook = hook

    def _before_send(self) -> None:
        """The call's first request is about to leave: a call later than its cluster slot's
        margin by now raises :class:`MissedSlot` (building the request can take long on a busy
        interpreter too) and is not sent. Only the first: a driver call is one token, and the
        further requests some drivers make for one call (pages of a listing) come later by
        nature; checking them would miss the slot on every try."""
        permit: Permit | None = getattr(self._sending, "permit", None)
        if permit is not None:
            self._sending.permit = None
            self.limiter.check_slot(permit)

    def _invoke(
        self, operation: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], permit: Permit
    ) -> Any:
        """One driver call in a worker thread, its rate-limit token taken just before it (too
        late for its cluster slot: :class:`MissedSlot`, nothing sent)."""
        driver = self._driver_sync()
        self.limiter.wait_sync(permit)
        self.calls[operation] += 1
        self._sending.permit = permit
        try:
            return getattr(driver, operation)(*args, **kwargs)
        except MissedSlot:
            self.calls[operation] -= 1  # never sent
            raise
        finally:
            self._sending.permit = None

    @staticmethod
    def _error(exc: BaseException) -> tuple[errors.ErrorKind, str]:
        """The kind of a driver error and a short message (libcloud's own text, bounded)."""
        text = str(exc)[:300]
        status = getattr(exc, "code", None)
        if type(exc).__name__ == "RateLimitReachedError" or any(
            code in text for code in errors.THROTTLE_CODES
        ):
            return errors.ErrorKind.THROTTLED, f"throttled: {text}"
        if "NotFound" in text or "does not exist" in text:
            return errors.ErrorKind.NOT_FOUND, text
        if isinstance(exc, OSError | TimeoutError) or (isinstance(status, int) and status >= 500):
            return errors.ErrorKind.UNKNOWN_OUTCOME, f"{type(exc).__name__} (no answer)"
        if type(exc).__module__.startswith(("requests", "urllib3")):
            return errors.ErrorKind.UNKNOWN_OUTCOME, f"{type(exc).__name__} (no answer)"
        return errors.ErrorKind.FATAL, f"{type(exc).__name__}: {text}"

    def _backoff(self, attempt: int, kind: errors.ErrorKind) -> float:
        delay = backoff_delay(
            attempt,
            base=self.opts.backoff_base,
            factor=2.0,
            maximum=self.opts.backoff_max,
            jitter=self._rng.random(),
        )
        if kind is errors.ErrorKind.THROTTLED:
            self.limiter.pause(delay)
        return delay

    async def _api(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        attempt = 0
        permit: Permit | None = None
        while True:
            attempt += 1
            permit = await self.limiter.acquire(again=permit)
            try:
                return await self.run_blocking(self._invoke, operation, args, kwargs, permit)
            except MissedSlot:
                attempt -= 1  # nothing was sent: a new slot, in the same place in the queue
                continue
            except Exception as exc:
                kind, message = self._error(exc)
                if kind in (errors.ErrorKind.FATAL, errors.ErrorKind.NOT_FOUND) or (
                    attempt >= self.opts.max_attempts
                ):
                    if kind is errors.ErrorKind.NOT_FOUND and operation == "destroy_node":
                        return True
                    raise exceptions.BackendError(
                        f"libcloud {self.opts.driver} {operation} failed after {attempt} "
                        f"attempt(s): {message}"
                    ) from None
                await asyncio.sleep(self._backoff(attempt, kind))

    async def _list_round(self, _items: frozenset[str]) -> list[_Node]:
        nodes = await self._api("list_nodes")
        out = []
        for node in nodes or []:
            vm = self._vm_of(node)
            if vm is None:
                continue
            out.append(
                _Node(
                    id=str(node.id),
                    vm=vm,
                    state=str(node.state),
                    public=tuple(str(a) for a in node.public_ips or ()),
                    private=tuple(str(a) for a in node.private_ips or ()),
                    raw=node,
                    fence=cloud_tags.fence_of(self._meta(node)),
                )
            )
        return out

    async def _nodes(self, vm: str) -> list[_Node]:
        return [n for n in await self._lister.submit() if n.vm == vm and n.alive]

    # --- the operations --------------------------------------------------------------------

    def _create_kwargs(self, spec: VMSpec, fence: Fence | None = None) -> dict[str, Any]:
        """``create_node``'s keyword arguments, except the image, size and location objects."""
        opts = self.opts
        kwargs: dict[str, Any] = {"name": self.node_name(spec.name)}
        if opts.networks:
            kwargs[opts.networks_arg] = list(opts.networks)
        if opts.key_pair is not None:
            kwargs[opts.key_pair_arg] = opts.key_pair
        if opts.identify == "tags":
            tag_map = cloud_tags.instance_tags(
                opts.namespace, self.pool, spec.name, spec.id_in_pool, opts.metadata, fence
            )
            tag_map.pop(cloud_tags.NAME, None)  # the node's name is set by the driver
            kwargs[opts.metadata_arg] = tag_map
        kwargs.update(opts.create_args)
        return kwargs

    def _create_sync(self, kwargs: Mapping[str, Any], permit: Permit) -> Any:
        """Create the node (in a thread). Image, size and location are built from their ids:
        listing them to pick the objects would cost calls against the rate limit."""
        opts = self.opts
        driver = self._driver_sync()
        self.limiter.wait_sync(permit)
        self.calls["create_node"] += 1
        image = NodeImage(id=opts.image, name=opts.image, driver=driver)
        size = NodeSize(
            id=opts.size, name=opts.size, ram=0, disk=0, bandwidth=None, price=0.0, driver=driver
        )
        extra: dict[str, Any] = {}
        if opts.location is not None:
            extra["location"] = NodeLocation(
                id=opts.location, name=opts.location, country="", driver=driver
            )
        self._sending.permit = permit
        try:
            return driver.create_node(image=image, size=size, **extra, **kwargs)
        except MissedSlot:
            self.calls["create_node"] -= 1  # never sent
            raise
        finally:
            self._sending.permit = None

    async def _fence(
        self, name: str, operation: str, nodes: list[_Node], fence: Fence | None
    ) -> None:
        """Refuse (``StaleFence``) if a node records a newer fence; else record ``fence`` on
        those another holder recorded (or none did), where the driver can tag."""
        if fence is None or not nodes or Capability.FENCING not in self.capabilities:
            return
        for node in nodes:
            fencing.admit(self.pool, operation, name, node.fence, fence)
        for node in nodes:
            if not fencing.must_record(node.fence, fence, every_grant=False):
                continue
            if not hasattr(self._driver_cls, "ex_create_tags"):
                log.warning(
                    "pool %s: %s %s: driver %s cannot tag node %s: fencing token %d not recorded",
                    self.pool,
                    operation,
                    name,
                    self.opts.driver,
                    node.id,
                    fence.token,
                )
                continue
            await self._api("ex_create_tags", node.raw, cloud_tags.fence_tags(fence))

    async def spawn(self, spec: VMSpec, *, fence: Fence | None = None) -> Handle:
        """Create the node (a node of that name that exists already is adopted, once checked
        against ``fence``); ``fence`` goes into the node's metadata."""
        existing = await self._nodes(spec.name)
        if existing:
            await self._fence(spec.name, "spawn", existing, fence)
            return Handle(spec.name, ref=min(existing, key=lambda n: n.id).id)
        kwargs = self._create_kwargs(
            spec, fence if Capability.FENCING in self.capabilities else None
        )
        attempt = 0
        permit: Permit | None = None
        while True:
            attempt += 1
            permit = await self.limiter.acquire(1, again=permit)  # behind lists and destroys
            future: Future[Any] = self.submit_blocking(self._create_sync, kwargs, permit)
            self._track_create(spec.name, future)
            try:
                node = await asyncio.wrap_future(future)
            except MissedSlot:
                attempt -= 1  # nothing was sent: a new slot, in the same place in the queue
                continue
            except Exception as exc:
                kind, message = self._error(exc)
                if kind in (errors.ErrorKind.FATAL, errors.ErrorKind.NOT_FOUND) or (
                    attempt >= self.opts.max_attempts
                ):
                    raise exceptions.BackendError(
                        f"libcloud {self.opts.driver} create_node {spec.name} failed after "
                        f"{attempt} attempt(s): {message}"
                    ) from None
                await asyncio.sleep(self._backoff(attempt, kind))
                if kind is errors.ErrorKind.UNKNOWN_OUTCOME:
                    existing = await self._nodes(spec.name)
                    if existing:
                        return Handle(spec.name, ref=min(existing, key=lambda n: n.id).id)
                continue
            node_id = str(node.id)
            self._created[node_id] = time.monotonic()
            return Handle(spec.name, ref=node_id)

    def _track_create(self, name: str, future: Future[Any]) -> None:
        self._creating[name] = future

        def done(f: Future[Any]) -> None:  # runs in the SDK thread: dict operations only
            if self._creating.get(name) is f:
                del self._creating[name]

        future.add_done_callback(done)

    async def _node(self, handle: Handle) -> _Node | None:
        nodes = await self._lister.submit()
        if handle.ref:
            return next((n for n in nodes if n.id == handle.ref), None)
        alive = [n for n in nodes if n.vm == handle.name and n.alive]
        return min(alive, key=lambda n: n.id) if alive else None

    async def poll(self, handle: Handle) -> PollResult:
        """Pending until the node runs with an address."""
        node = await self._node(handle)
        if node is None:
            created = self._created.get(handle.ref)
            if created is not None and time.monotonic() - created < self.opts.not_found_grace:
                return PollResult(PollStatus.PENDING, retry_after=self.opts.list_interval)
            return PollResult(PollStatus.FAILED, reason="the node does not exist (any more)")
        if node.state in _PENDING_STATES:
            return PollResult(PollStatus.PENDING, retry_after=self.opts.list_interval)
        if node.state != NodeState.RUNNING:
            return PollResult(PollStatus.FAILED, reason=f"node {node.id} is {node.state}")
        addresses = node.public if self.opts.address == "public" else node.private
        address = next((a for a in addresses if is_valid_address(a)), None)
        if address is None:
            return PollResult(PollStatus.PENDING, retry_after=self.opts.list_interval)
        return PollResult(PollStatus.UP, address=address)

    async def terminate(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """Destroy every live node of the VM (idempotent; waits for its create to end); with
        ``fence``, checked (``StaleFence``, nothing destroyed) and recorded first."""
        creating = self._creating.get(handle.name)
        if creating is not None and not creating.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(creating))
        nodes = await self._lister.submit()
        doomed = [n for n in nodes if n.alive and (n.vm == handle.name or n.id == handle.ref)]
        await self._fence(handle.name, "terminate", doomed, fence)
        for node in doomed:
            await self._api("destroy_node", node.raw)
            self._created.pop(node.id, None)

    async def livecheck(self, handle: Handle) -> bool:
        """Whether the node is running."""
        node = await self._node(handle)
        return node is not None and node.state == NodeState.RUNNING

    async def list(self) -> list[Handle]:
        """The pool's live nodes, by VM name."""
        nodes = await self._lister.submit()
        return sorted(
            (Handle(n.vm, ref=n.id) for n in nodes if n.alive), key=lambda h: (h.name, h.ref)
        )

    async def aclose(self) -> None:
        """Stop the list rounds and the thread pool."""
        await self._lister.aclose()
        await super().aclose()
        shared, self.shared = self.shared, None
        if shared is not None:
            self.limiter.unshare(shared)
            if self.quota is not None and self.quota.book is shared:
                self.quota.book = None
            shared.close()


def _int(value: object) -> int | None:
    """``value`` as a positive int (libcloud reports numbers as ints or strings), else None."""
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number > 0 else None


def _size_vcpus(size: Any) -> int | None:
    """A libcloud size's vCPUs: the ``vcpus`` attribute (OpenStack) or ``extra``'s
    ``vcpus`` / ``vcpu`` (EC2's price list) / ``cpu``."""
    found = _int(getattr(size, "vcpus", None))
    extra = getattr(size, "extra", None) or {}
    for key in ("vcpus", "vcpu", "cpu"):
        if found is None and isinstance(extra, Mapping):
            found = _int(extra.get(key))
    return found
