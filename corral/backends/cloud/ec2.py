"""The ``ec2`` backend (SPEC §6, issue 13): AWS EC2 and EC2-compatible clouds through boto3.

Every instance is created with corral's tags (:mod:`corral.backends.cloud.tags`) in the same
RunInstances call, so no instance ever exists untagged, and ``list()`` returns only the pool's.
Calls go through the account's shared rate limit (:mod:`ratelimit`): admitted on the event loop,
then gated again in the worker thread right before each request; throttling answers pause the
whole account and are retried with backoff; boto3's own retries are off, so every HTTP request is
one token of the bucket. Polls and the look-ups before a create share one DescribeInstances per
``describe_interval`` of the VMs asked about (by instance id, or by name where a twin may exist);
livechecks, lists and terminations by name share one of the whole pool; concurrent terminations
share one TerminateInstances (:mod:`batching`).

A create is idempotent on retry: a ClientToken (EC2 returns the first instance again) *and* a
look-up by the ``corral:vm`` tag before creating (for clouds, or moto, that ignore the token). A
terminate waits for a create of the same VM still running in a thread, then terminates every live
instance carrying the VM's name, so a create whose answer was lost is never left behind.

Fencing (``FENCING``, :mod:`corral.backends.fencing`): a spawn given a fence tags the instance
with it (``corral:fence``, ``corral:fence-holder``) in the same RunInstances call. A fenced
terminate reads the VM's instances from the shared targeted describe (one DescribeInstances per
interval for every VM polled or terminated in it), refuses with ``StaleFence`` if one records a
newer token, re-tags them (one CreateTags for all) only when another holder tagged them (a
survivor taking over), then terminates them in the shared batch. Tags have no compare-and-set:
the window left is between the describe and the TerminateInstances.

Credentials come from boto3's standard chain (environment, shared profile, instance role), never
from corral's configuration, and never appear in an error or a log line. The SDK is blocking: it
runs in the backend's bounded thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, Literal

import boto3
import botocore.config
import botocore.exceptions
import pydantic

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
)
from corral.backends.cloud import ec2_model as model
from corral.backends.cloud import tags as cloud_tags
from corral.backends.cloud.batching import Coalescer
from corral.backends.cloud.credentials import refuse_inline_credentials
from corral.backends.cloud.quota import QuotaAdmission, QuotaOptions, Usage
from corral.backends.cloud.ratelimit import MissedSlot, Permit, RateLimiter, limiter_for
from corral.backends.cloud.shared import SharedCloud, shared_for
from corral.backends.cloud.workers import Workers
from corral.backends.guard import backoff_delay

log = logging.getLogger(__name__)

MAX_USER_DATA = 16 * 1024
"""EC2 refuses user data above 16 KiB (before base64)."""
TERMINATE_BATCH = 1000
"""TerminateInstances takes at most 1000 ids."""
STATUS_BATCH = 100
"""DescribeInstanceStatus takes at most 100 ids."""
ROUND_SHARE = 5.0
"""Batched describe and terminate rounds start at least this many token intervals apart."""
CREATE_PRIORITY = 1
"""Creates wait behind describes and terminates (priority 0) for the account's tokens: a storm
of spawns must not delay the polls that notice VMs coming up, nor the terminations."""
WORKER_RESERVE = 4
"""One worker thread in this many is kept for describes and terminates (:mod:`workers`)."""
FILTER_VALUES = 200
"""DescribeInstances takes at most 200 values in one filter: a targeted round asks for the VM
names it polls in chunks of this many (one call when within the limit)."""
GONE_MEMORY = 100_000
"""Terminated instance ids remembered (to tell "terminated" from "not visible yet")."""


class EC2Options(BackendOptions):
    """Options of the ``ec2`` backend."""

    region: str = pydantic.Field(min_length=1, description="AWS region, e.g. eu-central-1")
    endpoint_url: str | None = pydantic.Field(
        None, pattern=r"^https?://", description="endpoint of an EC2-compatible cloud"
    )
    profile: str | None = pydantic.Field(None, description="shared-credentials profile name")
    image_id: str = pydantic.Field(min_length=1, description="the AMI to boot")
    instance_type: str = "t3.micro"
    subnet_id: str | None = None
    security_group_ids: list[str] = pydantic.Field(default_factory=list)
    key_name: str | None = None
    user_data: str | None = pydantic.Field(None, description="cloud-init user data, inline")
    user_data_file: str | None = pydantic.Field(None, description="user data from a file")
    spot: bool = False
    spot_max_price: str | None = pydantic.Field(None, pattern=r"^\d+(\.\d+)?$")
    tags: dict[str, str] = pydantic.Field(default_factory=dict)
    namespace: str = pydantic.Field("default", description="separates corral installations")
    address: Literal["private", "public"] = "private"
    up_check: Literal["running", "status_ok", "ssh"] = "running"
    ssh_port: int = pydantic.Field(22, ge=1, le=65535)
    describe_interval: float = pydantic.Field(2.0, gt=0, le=300)
    rate: float = pydantic.Field(10.0, gt=0, description="API calls per second, per account")
    burst: float = pydantic.Field(5.0, ge=1)
    account: str | None = pydantic.Field(None, description="rate-limit key of the account")
    max_attempts: int = pydantic.Field(8, ge=1, le=100)
    backoff_base: float = pydantic.Field(0.5, gt=0)
    backoff_max: float = pydantic.Field(20.0, gt=0)
    connect_timeout: float = pydantic.Field(5.0, gt=0)
    read_timeout: float = pydantic.Field(30.0, gt=0)
    not_found_grace: float = pydantic.Field(60.0, ge=0)
    quota: QuotaOptions | None = None
    """Limits admission respects (instances, vCPUs, memory of the instance type)."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: object) -> object:
        return refuse_inline_credentials(
            data, "use the environment, a profile (profile: NAME) or the instance role"
        )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> EC2Options:
        if self.user_data is not None and self.user_data_file is not None:
            raise ValueError("user_data and user_data_file: give one of them")
        if self.spot_max_price is not None and not self.spot:
            raise ValueError("spot_max_price needs spot: true")
        cloud_tags.check_namespace(self.namespace)
        cloud_tags.check_user_tags(self.tags)
        return self

    def account_key(self) -> str:
        """The key of the account's shared rate limit."""
        if self.account:
            return f"ec2:{self.account}"
        return f"ec2:{self.endpoint_url or 'aws'}:{self.region}:{self.profile or 'default'}"


class _NotFound(Exception):
    """EC2 does not know (some of) the instances a call named."""


class EC2Backend(FencedBackend):
    """VMs as EC2 instances, tagged with the pool and the VM name."""

    type_name: ClassVar[str] = "ec2"
    options_model: ClassVar[type[BackendOptions]] = EC2Options

    def __init__(self, options: BackendOptions, *, pool: str, base_dir: Path | None = None) -> None:
        """Bind to the options; no network call happens before the first operation."""
        super().__init__(options, pool=pool, base_dir=base_dir)
        assert isinstance(options, EC2Options)  # noqa: S101 - the registry validated the type
        self.opts = options
        self.capabilities = self.capabilities | {Capability.LIST, Capability.LIVECHECK}
        self._user_data = self._load_user_data()
        self.limiter: RateLimiter = limiter_for(options.account_key(), options.rate, options.burst)
        self.calls: Counter[str] = Counter()
        """API calls made, by operation name (for statistics and the benchmark)."""
        self._usage: Usage | None = None
        self.shared: SharedCloud | None = None
        """The cluster's buckets and quota ledgers (a PostgreSQL store), once attached."""
        self.quota: QuotaAdmission | None = None
        if options.quota is not None:
            self.quota = QuotaAdmission(
                pool=pool,
                account_key=options.account_key(),
                quota=options.quota,
                sizer=self.vm_usage,
            )
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._workers: tuple[asyncio.AbstractEventLoop, Workers] | None = None
        """The loop's count of free SDK threads (a call takes one before its slot)."""
        self._sending = threading.local()
        """The permit of the call each SDK thread is making (checked in ``before-send``)."""
        self._creating: dict[str, Future[Any]] = {}
        self._created: dict[str, float] = {}
        self._status_ok: set[str] = set()
        self._seen: set[str] = set()
        self._named: dict[str, str] = {}
        """Instance id -> VM name, as targeted describes saw them."""
        self._gone: dict[str, None] = {}
        """Instances a describe showed and a later one did not: terminated (oldest first)."""
        self._by_name: dict[str, None] = {}
        """VMs whose polls ask by name, not by instance id: a create of theirs lost its answer,
        ran beside another create of the same name, or found an instance to adopt (a duplicate
        may exist, and only a describe by name shows it)."""
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        # describes and terminates go before creates for the account's tokens: space their
        # rounds so that each kind takes at most a fifth of the budget, or creates would starve
        share = ROUND_SHARE / options.rate
        self._describer: Coalescer[str, model.Snapshot] = Coalescer(
            self._describe_round, min_interval=max(options.describe_interval, share)
        )
        # polls and spawns ask only about their VMs: a describe of the whole pool grows with its
        # live instances (seconds at 500), and polls got rare. A poll asks by instance id when
        # this process made the instance with one clean create (a tag filter costs moto a walk
        # over the account's tags per instance); by name otherwise, so duplicates show
        self._targeted: Coalescer[model.Ask, model.Snapshot] = Coalescer(
            self._targeted_round, min_interval=max(options.describe_interval, share)
        )
        self._terminator: Coalescer[str, None] = Coalescer(
            self._terminate_round, min_interval=share, max_items=TERMINATE_BATCH
        )

    def _load_user_data(self) -> str | None:
        opts = self.opts
        text = opts.user_data
        if opts.user_data_file is not None:
            path = Path(opts.user_data_file)
            path = path if path.is_absolute() else self.base_dir / path
            try:
                text = path.read_text()
            except OSError as exc:
                raise exceptions.ConfigError(
                    f"backend 'ec2': user_data_file {str(path)!r}: {exc.strerror}"
                ) from exc
        if text is not None and len(text.encode()) > MAX_USER_DATA:
            raise exceptions.ConfigError(
                f"backend 'ec2': user data is {len(text.encode())} bytes; "
                f"EC2 allows {MAX_USER_DATA}"
            )
        return text

    # --- quotas and the cluster -----------------------------------------------------------

    def attach_store(self, url: str) -> None:
        """On a PostgreSQL store, make the account's rate limit and the quota cluster-wide."""
        if self.shared is not None:
            return
        self.shared = shared_for(url)
        if self.shared is not None:
            self.limiter.share(self.opts.account_key(), self.shared)
            if self.quota is not None:
                self.quota.book = self.shared

    def admission(self) -> QuotaAdmission | None:
        """The pool's quota, when it declares one (the guard admits every spawn against it)."""
        return self.quota

    async def vm_usage(self) -> Usage:
        """What one VM of the pool counts against a quota: the instance type's vCPUs and memory
        (DescribeInstanceTypes, once per process and type), unless the quota overrides them."""
        if self._usage is None:
            quota = self.opts.quota
            vcpus = quota.vm_vcpus if quota is not None else None
            memory = quota.vm_memory_mib if quota is not None else None
            if vcpus is None or memory is None:
                size = _TYPE_SIZES.get((self.opts.account_key(), self.opts.instance_type))
                if size is None:
                    size = await self._describe_type(self.opts.instance_type)
                    _TYPE_SIZES[(self.opts.account_key(), self.opts.instance_type)] = size
                vcpus = vcpus if vcpus is not None else size[0]
                memory = memory if memory is not None else size[1]
            self._usage = Usage(1, vcpus, memory)
        return self._usage

    async def _describe_type(self, instance_type: str) -> tuple[int, int]:
        try:
            answer = await self._api("describe_instance_types", InstanceTypes=[instance_type])
        except _NotFound as exc:
            raise exceptions.ConfigError(
                f"backend 'ec2': instance type {instance_type!r} unknown to the cloud ({exc}); "
                "give quota.vm_vcpus and quota.vm_memory_mib"
            ) from None
        for item in answer.get("InstanceTypes") or []:
            if item.get("InstanceType") == instance_type:
                vcpus = (item.get("VCpuInfo") or {}).get("DefaultVCpus")
                memory = (item.get("MemoryInfo") or {}).get("SizeInMiB")
                if isinstance(vcpus, int) and isinstance(memory, int):
                    return vcpus, memory
        raise exceptions.ConfigError(
            f"backend 'ec2': the cloud gave no vCPUs and memory for instance type "
            f"{instance_type!r}; give quota.vm_vcpus and quota.vm_memory_mib"
        )

    # --- the SDK, in threads ---------------------------------------------------------------

    def _client_sync(self) -> Any:
        with self._client_lock:
            if self._client is None:
                opts = self.opts
                session = _session(opts.profile, opts.region)
                config = botocore.config.Config(
                    connect_timeout=opts.connect_timeout,
                    read_timeout=opts.read_timeout,
                    retries={"total_max_attempts": 1},  # corral retries, under its rate limit
                    max_pool_connections=max(10, opts.blocking_workers),
                )
                with _SESSIONS_LOCK:
                    self._client = session.client(
                        "ec2", endpoint_url=opts.endpoint_url, config=config
                    )
                self._client.meta.events.register("before-send.ec2", self._before_send)
            return self._client

    def _before_send(self, **_: Any) -> None:
        """botocore's last step before the request leaves (built and signed): a call later than
        its cluster slot's margin by now raises :class:`MissedSlot` (building the request can
        take long on a busy interpreter too) and is not sent."""
        permit: Permit | None = getattr(self._sending, "permit", None)
        if permit is not None:
            self.limiter.check_slot(permit)

    async def _start(
        self, priority: int, again: Permit | None, operation: str, kwargs: Mapping[str, object]
    ) -> tuple[Permit, Future[dict[str, Any]]]:
        """Start one call in a worker thread: first a free thread (waited for on the loop), then
        the rate limit's slot. A slot taken for a call with no thread to run in would pass while
        the call waits in the pool's queue (every thread busy with slow creates) and be missed.
        The thread counts as taken until its call really ends, even if the caller gave up.
        Threads go by priority as slots do (:mod:`workers`): describes before creates."""
        loop = asyncio.get_running_loop()
        if self._workers is None or self._workers[0] is not loop:
            workers = self.opts.blocking_workers
            self._workers = (loop, Workers(workers, reserve=workers // WORKER_RESERVE))
        free = self._workers[1]
        await free.take(priority)
        try:
            permit = await self.limiter.acquire(priority, again=again)
            future = self.submit_blocking(self._invoke, operation, kwargs, permit)
        except BaseException:
            free.give_back()
            raise

        def done(_: Future[dict[str, Any]]) -> None:  # in the SDK thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(free.give_back)

        future.add_done_callback(done)
        return permit, future

    def _invoke(
        self, operation: str, kwargs: Mapping[str, object], permit: Permit
    ) -> dict[str, Any]:
        """One SDK call, in a worker thread, through the rate limit's gate right before the
        request leaves: calls admitted on the loop but started late by a busy interpreter never
        reach the API in a bunch (the limit holds at the wire, not only on average); one too
        late for its cluster slot raises :class:`MissedSlot` and sends nothing."""
        client = self._client_sync()
        self.limiter.wait_sync(permit)
        self._sending.permit = permit
        self.calls[operation] += 1
        try:
            result: dict[str, Any] = getattr(client, operation)(**kwargs)
        except MissedSlot:
            self.calls[operation] -= 1  # never sent
            raise
        finally:
            self._sending.permit = None
        return result

    @staticmethod
    def _error(exc: BaseException) -> tuple[model.ErrorKind, str]:
        """The kind of an SDK error and a message safe to show (never a credential)."""
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            kind = model.classify(code or None, status if isinstance(status, int) else None)
            if kind is model.ErrorKind.UNKNOWN_OUTCOME and not code:
                code = f"HTTP {status}"
            return kind, f"{code}: {message}"[:500]
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError
            | botocore.exceptions.ConnectionError
            | botocore.exceptions.HTTPClientError,
        ):
            return model.ErrorKind.UNKNOWN_OUTCOME, f"{type(exc).__name__} (no answer)"
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return model.ErrorKind.FATAL, "no AWS credentials found (environment, profile, role)"
        if isinstance(exc, botocore.exceptions.BotoCoreError | ValueError | TypeError):
            return model.ErrorKind.FATAL, type(exc).__name__
        return model.ErrorKind.FATAL, type(exc).__name__

    def _backoff(self, attempt: int, kind: model.ErrorKind) -> float:
        delay = backoff_delay(
            attempt,
            base=self.opts.backoff_base,
            factor=2.0,
            maximum=self.opts.backoff_max,
            jitter=self._rng.random(),
        )
        if kind is model.ErrorKind.THROTTLED:
            self.limiter.pause(delay)  # every pool on the account slows down, not just this one
        return delay

    async def _api(self, operation: str, **kwargs: object) -> dict[str, Any]:
        """One idempotent call under the rate limit, retried on throttling and lost answers."""
        attempt = 0
        permit: Permit | None = None
        while True:
            attempt += 1
            permit, future = await self._start(0, permit, operation, kwargs)
            try:
                return await asyncio.wrap_future(future)
            except MissedSlot:
                attempt -= 1  # nothing was sent: a new slot, in the same place in the queue
                continue
            except Exception as exc:
                kind, message = self._error(exc)
                if kind is model.ErrorKind.NOT_FOUND:
                    raise _NotFound(message) from None
                if kind is model.ErrorKind.FATAL or attempt >= self.opts.max_attempts:
                    raise exceptions.BackendError(
                        f"ec2 {operation} failed after {attempt} attempt(s): {message}"
                    ) from None  # botocore's text is not ours to show: it may quote a request
                delay = self._backoff(attempt, kind)
                log.info(
                    "pool %s: ec2 %s: %s; retry in %.2f s", self.pool, operation, message, delay
                )
                await asyncio.sleep(delay)

    # --- batched rounds --------------------------------------------------------------------

    async def _describe_round(self, _items: frozenset[str]) -> model.Snapshot:
        """The whole pool (for ``list()``, the leak sweep, terminations by name)."""
        instances = await self._describe_pages([])
        snapshot = model.Snapshot(tuple(instances))
        current = {i.id for i in instances}
        for vanished in self._seen - current:
            self._gone[vanished] = None
        self._trim_gone()
        self._seen = current
        if self.opts.up_check == "status_ok":
            await self._refresh_status(snapshot)
        return snapshot

    async def _targeted_round(self, asks: frozenset[model.Ask]) -> model.Snapshot:
        """Only the pool's instances asked for, by id or by VM name (one call per chunk of 200;
        :func:`model.targeted_filters`)."""
        instances: list[model.Instance] = []
        for selector in model.targeted_filters(asks, FILTER_VALUES):
            instances.extend(await self._describe_pages([selector]))
        snapshot = model.Snapshot(tuple(instances))
        current = {i.id for i in instances}
        ids = {a.id for a in asks} if model.by_id(asks) else set()
        names = set() if ids else {a.vm for a in asks}
        for inst_id, vm in list(self._named.items()):
            if (vm in names or inst_id in ids) and inst_id not in current:
                self._gone[inst_id] = None
                del self._named[inst_id]
        for inst in instances:
            if inst.vm:
                self._named[inst.id] = inst.vm
        self._trim_gone()
        if self.opts.up_check == "status_ok":
            await self._refresh_status(snapshot, prune=False)
        return snapshot

    def _trim_gone(self) -> None:
        while len(self._gone) > GONE_MEMORY:
            del self._gone[next(iter(self._gone))]
        while len(self._named) > GONE_MEMORY:
            del self._named[next(iter(self._named))]
        while len(self._by_name) > GONE_MEMORY:
            del self._by_name[next(iter(self._by_name))]

    async def _describe_pages(self, first: list[dict[str, object]]) -> list[model.Instance]:
        """The pool's instances passing the filters ``first`` (given first: the selective ones,
        see :func:`model.targeted_filters`), every page."""
        instances: list[model.Instance] = []
        token: str | None = None
        filters = [
            *first,
            *cloud_tags.ec2_filters(self.opts.namespace, self.pool),
            {"Name": "instance-state-name", "Values": list(model.DESCRIBED_STATES)},
        ]
        while True:
            kwargs: dict[str, object] = {"Filters": filters, "MaxResults": 1000}
            if token:
                kwargs["NextToken"] = token
            page = await self._api("describe_instances", **kwargs)
            instances.extend(model.parse_instances(page))
            token = page.get("NextToken") or None
            if token is None:
                break
        return instances

    async def _refresh_status(self, snapshot: model.Snapshot, *, prune: bool = True) -> None:
        running = {i.id for i in snapshot.instances if i.state is model.InstanceState.RUNNING}
        if prune:  # a whole-pool snapshot: an instance not running there is not ok any more
            self._status_ok &= running
        for chunk in model.chunks(running - self._status_ok, STATUS_BATCH):
            answer = await self._api("describe_instance_status", InstanceIds=chunk)
            for item in answer.get("InstanceStatuses") or []:
                inst = (item.get("InstanceStatus") or {}).get("Status")
                system = (item.get("SystemStatus") or {}).get("Status")
                if inst == "ok" and system == "ok":
                    self._status_ok.add(str(item.get("InstanceId")))

    async def _terminate_round(self, ids: frozenset[str]) -> None:
        for chunk in model.chunks(ids, TERMINATE_BATCH):
            pending = set(chunk)
            while pending:
                try:
                    await self._api("terminate_instances", InstanceIds=sorted(pending))
                    break
                except _NotFound as exc:
                    gone = model.ids_in_message(str(exc)) & pending
                    if not gone and len(pending) > 1:
                        for one in sorted(pending):  # cannot tell which: one call each
                            await self._terminate_round(frozenset({one}))
                        break
                    pending -= gone or pending  # an unknown instance is terminated already

    # --- the operations --------------------------------------------------------------------

    def _run_params(self, spec: VMSpec, fence: Fence | None = None) -> dict[str, object]:
        opts = self.opts
        tag_map = cloud_tags.instance_tags(
            opts.namespace, self.pool, spec.name, spec.id_in_pool, opts.tags, fence
        )
        params: dict[str, object] = {
            "ImageId": opts.image_id,
            "InstanceType": opts.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": cloud_tags.ec2_tag_list(tag_map)}
                for kind in ("instance", "volume")
            ],
        }
        if opts.subnet_id:
            params["SubnetId"] = opts.subnet_id
        if opts.security_group_ids:
            params["SecurityGroupIds"] = list(opts.security_group_ids)
        if opts.key_name:
            params["KeyName"] = opts.key_name
        if self._user_data is not None:
            params["UserData"] = self._user_data  # boto3 encodes it in base64
        if opts.spot:
            spot: dict[str, object] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if opts.spot_max_price:
                spot["MaxPrice"] = opts.spot_max_price
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        return params

    async def _existing(self, name: str) -> model.Instance | None:
        """A live instance already carrying the VM's name (a previous create that succeeded)."""
        snapshot = await self._targeted.submit(model.Ask(name))
        alive = [i for i in snapshot.by_vm(name) if i.alive]
        return min(alive, key=lambda i: i.id) if alive else None

    def _adopt(self, name: str, inst: model.Instance) -> Handle:
        log.info("pool %s: VM %s already exists as %s: adopted", self.pool, name, inst.id)
        self._by_name[name] = None  # there may be more than the one adopted
        self._created.setdefault(inst.id, time.monotonic())
        return Handle(name=name, ref=inst.id)

    async def _fence(
        self, name: str, operation: str, instances: list[model.Instance], fence: Fence | None
    ) -> None:
        """Refuse (``StaleFence``) if one of the VM's instances records a newer fence; else tag
        those another holder tagged (or none did) with ``fence``, in one CreateTags."""
        if fence is None or not instances:
            return
        for inst in instances:
            fencing.admit(self.pool, operation, name, cloud_tags.fence_of(inst.tags), fence)
        retag = sorted(
            i.id
            for i in instances
            if fencing.must_record(cloud_tags.fence_of(i.tags), fence, every_grant=False)
        )
        if not retag:
            return
        log.info(
            "pool %s: %s %s: recording fencing token %d of %s on %s",
            self.pool,
            operation,
            name,
            fence.token,
            fence.holder,
            ", ".join(retag),
        )
        with contextlib.suppress(_NotFound):  # terminated meanwhile: nothing left to fence
            await self._api(
                "create_tags",
                Resources=retag,
                Tags=cloud_tags.ec2_tag_list(cloud_tags.fence_tags(fence)),
            )

    async def spawn(self, spec: VMSpec, *, fence: Fence | None = None) -> Handle:
        """Create the instance (returns once EC2 accepted it; ``poll`` tells when it is up),
        tagged with ``fence``; an instance of the VM that exists already is checked against
        ``fence`` (``StaleFence``) before it is adopted."""
        earlier = self._creating.get(spec.name)
        if earlier is not None and not earlier.done():  # a create the guard gave up on
            self._by_name[spec.name] = None
        found = await self._existing(spec.name)
        if found is not None:
            await self._fence(spec.name, "spawn", [found], fence)
            return self._adopt(spec.name, found)
        params = {**self._run_params(spec, fence), "ClientToken": f"corral-{uuid.uuid4().hex}"}
        attempt = 0
        permit: Permit | None = None
        while True:
            attempt += 1
            permit, future = await self._start(CREATE_PRIORITY, permit, "run_instances", params)
            self._track_create(spec.name, future)
            try:
                answer = await asyncio.wrap_future(future)
            except MissedSlot:
                attempt -= 1  # nothing was sent: a new slot, in the same place in the queue
                continue
            except Exception as exc:
                kind, message = self._error(exc)
                if kind in (model.ErrorKind.FATAL, model.ErrorKind.NOT_FOUND) or (
                    attempt >= self.opts.max_attempts
                ):
                    raise exceptions.BackendError(
                        f"ec2 run_instances {spec.name} failed after {attempt} attempt(s): "
                        f"{message}"
                    ) from None
                await asyncio.sleep(self._backoff(attempt, kind))
                if kind is model.ErrorKind.UNKNOWN_OUTCOME:
                    found = await self._existing(spec.name)  # did the lost call create it?
                    if found is not None:
                        return self._adopt(spec.name, found)
                    self._by_name[spec.name] = None  # it may have, not visible yet: a twin
                continue
            created = model.parse_instances({"Reservations": [answer]})
            if not created:
                raise exceptions.BackendError(
                    f"ec2 run_instances {spec.name}: the answer names no instance"
                )
            self._created[created[0].id] = time.monotonic()
            return Handle(name=spec.name, ref=created[0].id)

    def _track_create(self, name: str, future: Future[Any]) -> None:
        self._creating[name] = future

        def done(f: Future[Any]) -> None:  # runs in the SDK thread: dict operations only
            if self._creating.get(name) is f:
                del self._creating[name]

        future.add_done_callback(done)

    async def _instance(
        self, handle: Handle, *, targeted: bool = False
    ) -> tuple[model.Snapshot, model.Instance | None]:
        if targeted:
            clean = handle.ref in self._created and handle.name not in self._by_name
            ask = model.Ask(handle.name, handle.ref if clean else None)
            snapshot = await self._targeted.submit(ask)
        else:
            snapshot = await self._describer.submit()
        if handle.ref:
            return snapshot, snapshot.by_id(handle.ref)
        alive = [i for i in snapshot.by_vm(handle.name) if i.alive]
        return snapshot, (min(alive, key=lambda i: i.id) if alive else None)

    async def poll(self, handle: Handle) -> PollResult:
        """Pending until the instance runs (and passes the configured up-check), then up."""
        snapshot, inst = await self._instance(handle, targeted=True)
        if inst is not None:
            await self._drop_duplicates(snapshot, handle.name, keep=inst.id)
        created = self._created.get(inst.id if inst else handle.ref)
        age = time.monotonic() - created if created is not None else None
        if inst is None and handle.ref in self._gone:
            age = None  # seen before, now terminated: not a describe lagging behind a create
        checks = None
        if self.opts.up_check == "status_ok" and inst is not None:
            checks = inst.id in self._status_ok
        result = model.poll_result(
            inst,
            address=self.opts.address,
            age=age,
            grace=self.opts.not_found_grace,
            checks_ok=checks,
        )
        if result.status is PollStatus.PENDING:
            return PollResult(result.status, retry_after=self.opts.describe_interval)
        if result.address is not None and self.opts.up_check == "ssh":
            if not await _port_open(result.address, self.opts.ssh_port):
                return PollResult(PollStatus.PENDING, retry_after=self.opts.describe_interval)
        return result

    async def _drop_duplicates(self, snapshot: model.Snapshot, name: str, keep: str) -> None:
        """Terminate other live instances with the VM's name: creates whose answer was lost."""
        extra = {i.id for i in snapshot.by_vm(name) if i.alive and i.id != keep}
        if extra:
            log.warning("pool %s: VM %s has duplicates %s: terminating", self.pool, name, extra)
            await self._terminator.submit(*extra)

    async def terminate(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """Terminate every live instance of the VM (idempotent; waits for its create to end).

        With ``fence``, the instances are read first (the shared targeted describe) and checked
        (``StaleFence``, nothing terminated) and re-tagged by a survivor before they go."""
        creating = self._creating.get(handle.name)
        if creating is not None and not creating.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(creating))
        elif fence is None and handle.ref in self._created and handle.name not in self._creating:
            # made (or adopted) by this process, no create of it in flight: its id is the whole
            # story, no describe needed (a late duplicate is the poll's and the sweep's business)
            await self._terminator.submit(handle.ref)
            self._created.pop(handle.ref, None)
            return
        if fence is not None:
            await self._terminate_fenced(handle, fence)
            return
        snapshot = await self._describer.submit()
        ids = {i.id for i in snapshot.by_vm(handle.name) if i.alive}
        if handle.ref.startswith("i-"):
            known = snapshot.by_id(handle.ref)
            if (known is None and handle.ref not in self._gone) or (known and known.alive):
                ids.add(handle.ref)
        if ids:
            await self._terminator.submit(*ids)
        for instance_id in ids:
            self._created.pop(instance_id, None)

    async def _terminate_fenced(self, handle: Handle, fence: Fence) -> None:
        """Terminate the VM's instances seen by the shared targeted describe (by its name, so
        duplicates show too) once ``fence`` is checked and recorded on them."""
        snapshot = await self._targeted.submit(model.Ask(handle.name))
        doomed = {i.id: i for i in snapshot.by_vm(handle.name) if i.alive}
        known = snapshot.by_id(handle.ref) if handle.ref else None
        if known is not None and known.alive:
            doomed[known.id] = known
        await self._fence(handle.name, "terminate", list(doomed.values()), fence)
        ids = set(doomed)
        if handle.ref.startswith("i-") and known is None and handle.ref not in self._gone:
            ids.add(handle.ref)  # created but not visible yet: no tags to read (docs/cloud.md)
        if ids:
            await self._terminator.submit(*ids)
        for instance_id in ids:
            self._created.pop(instance_id, None)

    async def livecheck(self, handle: Handle) -> bool:
        """Whether the instance is running (from the pool's shared describe)."""
        _, inst = await self._instance(handle)
        return inst is not None and inst.state is model.InstanceState.RUNNING

    async def list(self) -> list[Handle]:
        """The pool's live instances (tagged with this namespace and pool), by VM name."""
        snapshot = await self._describer.submit()
        return sorted(
            (Handle(name=i.vm, ref=i.id) for i in snapshot.alive() if i.vm),
            key=lambda h: (h.name, h.ref),
        )

    async def aclose(self) -> None:
        """Stop the batching tasks, close the HTTP connections and the thread pool."""
        await self._describer.aclose()
        await self._targeted.aclose()
        await self._terminator.aclose()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        await super().aclose()
        shared, self.shared = self.shared, None
        if shared is not None:
            self.limiter.unshare(shared)
            if self.quota is not None and self.quota.book is shared:
                self.quota.book = None
            shared.close()


_TYPE_SIZES: dict[tuple[str, str], tuple[int, int]] = {}
"""(vCPUs, MiB) per (account key, instance type): asked once per process."""
_SESSIONS: dict[tuple[str | None, str], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(profile: str | None, region: str) -> Any:
    """One boto3 session per profile and region in the process: a session loads the service
    models (about a second of CPU); clients made from it reuse them. boto3 sessions are not
    thread-safe, so clients are made under the lock."""
    with _SESSIONS_LOCK:
        session = _SESSIONS.get((profile, region))
        if session is None:
            session = _SESSIONS[(profile, region)] = boto3.session.Session(
                profile_name=profile, region_name=region
            )
        return session


async def _port_open(address: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``address:port`` succeeds within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
