"""A connection to a master, and jobs of N tasks run through it.

A job is a framework of its own: it subscribes, uploads the module once,
packs pending tasks onto the offers it gets, acknowledges every status (in
one call per batch of updates), and tears the framework down at the end.
A lost event stream is re-subscribed with the same framework id, and the
tasks in flight are reconciled, so a master restart loses nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import grpc

from .profile import Profile
from .v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    common_pb2,
    operator_pb2,
    operator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

MiB = 1 << 20
_TERMINAL = {"FINISHED", "FAILED", "KILLED", "LOST", "ERROR"}
# Codes after which a call may be repeated: the master was away.
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class WasmosError(Exception):
    """A call the master refused, or a job that cannot go on.

    ``code`` is the gRPC status code when the master answered with one.
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TaskResult:
    """How one task of a job ended."""

    index: int
    task_id: str
    agent_id: str
    #: ``FINISHED``, ``FAILED``, ``KILLED``, ``LOST`` or ``ERROR``.
    state: str
    #: Why it failed (``OUT_OF_FUEL``, ``MEMORY_LIMIT``, ``TIMEOUT``, ``TRAP``, ...), or ``""``.
    reason: str
    message: str
    exit_code: Optional[int]
    #: Its stdout, when the job was asked to read it.
    stdout: Optional[bytes]

    @property
    def ok(self) -> bool:
        """True when the task finished with exit code 0."""
        return self.state == "FINISHED"


def _state(value: int) -> str:
    return common_pb2.TaskState.Name(value).removeprefix("TASK_STATE_")


def _reason(value: int) -> str:
    name = common_pb2.Reason.Name(value).removeprefix("REASON_")
    return "" if name == "UNSPECIFIED" else name


def _error(e: grpc.RpcError, what: str) -> WasmosError:
    return WasmosError(f"{what}: {e.details()}", e.code())


class Cluster:
    """A master, reached as the CLI would reach it.

    ``master``, ``ca`` (PEM text) and ``token`` default to the profile and
    environment (:class:`Profile`), then to ``http://127.0.0.1:5050``.
    """

    def __init__(
        self,
        master: Optional[str] = None,
        *,
        ca: Optional[str] = None,
        token: Optional[str] = None,
    ):
        profile = Profile.load()
        self.url = master or profile.master or "http://127.0.0.1:5050"
        ca = ca or profile.ca
        token = token or profile.token
        scheme, _, target = self.url.partition("://")
        if scheme == "https":
            credentials = grpc.ssl_channel_credentials(ca.encode() if ca else None)
            self._channel = grpc.secure_channel(target, credentials, _OPTIONS)
        elif scheme == "http":
            self._channel = grpc.insecure_channel(target, _OPTIONS)
        else:
            raise WasmosError(f"`{self.url}` is not an http:// or https:// URL")
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self.scheduler = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactsStub(self._channel)
        self.operator = operator_pb2_grpc.OperatorStub(self._channel)

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def call(self, method, request, what: str, timeout: float = 30.0):
        """One unary call with the token; a refusal raises
        :class:`WasmosError` naming ``what`` and the master's words."""
        try:
            return method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as e:
            raise _error(e, what) from None

    def upload(self, data: bytes) -> str:
        """Stores ``data`` on the master (once, whoever asks again) and
        returns its digest, the name tasks give it."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.artifacts.Stat(
                artifacts_pb2.StatRequest(digest=digest), metadata=self._metadata, timeout=30
            )
            return digest
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise _error(e, "stat of the artifact") from None

        def chunks():
            yield artifacts_pb2.UploadChunk(digest=digest, data=data[:MiB])
            for at in range(MiB, len(data), MiB):
                yield artifacts_pb2.UploadChunk(data=data[at : at + MiB])

        info = self.call(self.artifacts.Upload, chunks(), "upload", timeout=600)
        return info.digest

    def read_stdout(self, task_id: str, agent_id: str = "", limit: int = 4 * MiB) -> bytes:
        """A task's stdout (up to ``limit`` bytes), from its agent's sandbox."""
        reply = self.call(
            self.operator.ReadSandbox,
            operator_pb2.ReadSandboxRequest(
                task_id=task_id,
                agent_id=agent_id,
                target=1,  # SANDBOX_TARGET_STDOUT
                length=limit,
            ),
            "reading the sandbox",
        )
        if reply.error:
            raise WasmosError(f"reading the stdout of {task_id}: {reply.error}")
        return reply.data

    def run(
        self,
        module: Union[str, Path, bytes],
        n: int = 1,
        *,
        args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        cpus: float = 0.1,
        mem: int = 64 * MiB,
        disk: int = 0,
        max_fuel: int = 0,
        timeout: Optional[float] = None,
        role: str = "default",
        name: Optional[str] = None,
        read_stdout: bool = True,
        deadline: float = 3600.0,
    ) -> List[TaskResult]:
        """Runs ``module`` (a ``.wasm`` path or its bytes) as ``n`` tasks and
        returns how each ended, in index order.

        ``{i}`` in ``args`` and ``env`` values becomes the task's index.
        Each task gets ``cpus`` (a share of a core), ``mem`` bytes of linear
        memory, ``disk`` bytes of files, ``max_fuel`` (0: no limit) and a
        wall-clock ``timeout`` in seconds. With ``read_stdout`` each
        result carries its task's stdout. Raises :class:`WasmosError` when
        the master refuses the job (its words in the message) or it does not
        end within ``deadline`` seconds.
        """
        if n < 1:
            raise WasmosError(f"n must be at least 1, got {n}")
        data = module if isinstance(module, bytes) else Path(module).read_bytes()
        if name is None:
            name = Path(module).stem if not isinstance(module, bytes) else "job"
        digest = self.upload(data)
        template = _Template(digest, list(args), dict(env or {}), cpus, mem, disk, max_fuel, timeout)
        job = _Job(self, name, role, n, template, deadline)
        results = job.run()
        if read_stdout:
            results = [
                _with_stdout(r, self.read_stdout(r.task_id, r.agent_id))
                if r.state in ("FINISHED", "FAILED")
                else r
                for r in results
            ]
        return results


# Large offers and updates fit (the master keeps every event under 1 MiB);
# a master that restarts is found again within a couple of seconds.
_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * MiB),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _with_stdout(result: TaskResult, stdout: bytes) -> TaskResult:
    return TaskResult(**{**result.__dict__, "stdout": stdout})


@dataclass
class _Template:
    digest: str
    args: List[str]
    env: Dict[str, str]
    cpus: float
    mem: int
    disk: int
    max_fuel: int
    timeout: Optional[float]

    def spec(self, task_id: str, index: int) -> common_pb2.TaskSpec:
        fill = lambda s: s.replace("{i}", str(index))  # noqa: E731
        return common_pb2.TaskSpec(
            task_id=task_id,
            artifact=self.digest,
            args=[fill(a) for a in self.args],
            env=[common_pb2.EnvVar(name=k, value=fill(v)) for k, v in self.env.items()],
            resources=common_pb2.Resources(cpus=self.cpus, mem=self.mem, disk=self.disk),
            max_fuel=self.max_fuel,
            timeout_ms=int(self.timeout * 1000) if self.timeout else 0,
        )


class _Job:
    """One job's framework, driven by its event stream."""

    def __init__(self, cluster: Cluster, name: str, role: str, n: int, template: _Template, deadline: float):
        self.cluster = cluster
        self.info = scheduler_pb2.FrameworkInfo(
            name=name, role=role, user=getpass.getuser(), failover_timeout_ms=60_000
        )
        self.template = template
        self.prefix = f"{''.join(c if c.isalnum() or c in '._-' else '-' for c in name)[:60]}-{int(time.time() * 1000) % 10**9}"
        self.pending = deque(range(n))
        self.active: Dict[str, int] = {}
        self.attempts = [0] * n
        # Tasks of an Accept whose answer was lost: reconciled; those the
        # master never heard of come back TASK_UNKNOWN and are run again.
        self.in_doubt: set = set()
        self.results: Dict[int, TaskResult] = {}
        self.n = n
        self.deadline = time.monotonic() + deadline
        self.events: "queue.Queue" = queue.Queue()
        self.stream = None

    def run(self) -> List[TaskResult]:
        try:
            self._subscribe()
            while len(self.results) < self.n:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise WasmosError(f"the job did not end in time: {len(self.results)} of {self.n} tasks ended")
                try:
                    kind, event = self.events.get(timeout=min(left, 1.0))
                except queue.Empty:
                    continue
                if kind == "lost":
                    self._resubscribe(event)
                else:
                    self._event(event)
        finally:
            if self.info.framework_id:
                try:
                    self.cluster.scheduler.Teardown(
                        scheduler_pb2.TeardownRequest(framework_id=self.info.framework_id),
                        metadata=self.cluster._metadata,
                        timeout=10,
                    )
                except grpc.RpcError:
                    pass
            if self.stream is not None:
                self.stream.cancel()
        return [self.results[i] for i in range(self.n)]

    def _subscribe(self) -> None:
        """Opens the event stream; a reader thread puts its events on the
        queue (and a ``lost`` mark when it breaks)."""
        stream = self.cluster.scheduler.Subscribe(
            scheduler_pb2.SubscribeRequest(framework=self.info), metadata=self.cluster._metadata
        )
        self.stream = stream

        def read():
            try:
                for event in stream:
                    self.events.put(("event", event))
                self.events.put(("lost", "the master ended the event stream"))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    self.events.put(("lost", e))

        threading.Thread(target=read, name="wasmos-events", daemon=True).start()

    def _resubscribe(self, why) -> None:
        """The stream broke: subscribe again with the framework's id (until
        the job's deadline) unless the master refused the job outright."""
        if isinstance(why, grpc.RpcError) and why.code() not in _TRANSIENT | {grpc.StatusCode.RESOURCE_EXHAUSTED}:
            raise _error(why, "the event stream") from None
        time.sleep(0.2)
        self._subscribe()

    def _event(self, event) -> None:
        kind = event.WhichOneof("kind")
        if kind == "subscribed":
            first = not self.info.framework_id
            self.info.framework_id = event.subscribed.framework_id
            if self.pending:
                self._call(
                    self.cluster.scheduler.Revive,
                    scheduler_pb2.ReviveRequest(framework_id=self.info.framework_id),
                    "revive",
                )
            if not first and self.active:
                # What happened while the stream was down comes back as
                # answers to a reconciliation.
                self._call(
                    self.cluster.scheduler.Reconcile,
                    scheduler_pb2.ReconcileRequest(framework_id=self.info.framework_id, task_ids=list(self.active)),
                    "reconcile",
                )
        elif kind == "offers":
            self._offers(event.offers.offers)
        elif kind == "updates":
            self._updates(event.updates.statuses)
        elif kind == "error":
            raise WasmosError(f"the master removed the job's framework: {event.error.message}")

    def _call(self, method, request, what: str) -> bool:
        """A call that the master's absence does not fail: False when it
        was away (the stream breaks too, and the job re-subscribes)."""
        try:
            method(request, metadata=self.cluster._metadata, timeout=30)
            return True
        except grpc.RpcError as e:
            if e.code() in _TRANSIENT:
                return False
            raise _error(e, what) from None

    def _offers(self, offers) -> None:
        fid = self.info.framework_id
        need = self.template
        need_millis = max(1, round(need.cpus * 1000))
        for offer in offers:
            r = offer.resources
            millis, mem, disk = round(r.cpus * 1000), r.mem, r.disk
            tasks = []
            while self.pending and millis >= need_millis and mem >= need.mem and disk >= need.disk:
                index = self.pending.popleft()
                self.attempts[index] += 1
                task_id = f"{self.prefix}-{index}-{self.attempts[index]}"
                tasks.append(need.spec(task_id, index))
                self.active[task_id] = index
                millis, mem, disk = millis - need_millis, mem - need.mem, disk - need.disk
            if tasks:
                accepted = self._call(
                    self.cluster.scheduler.Accept,
                    scheduler_pb2.AcceptRequest(framework_id=fid, offer_ids=[offer.offer_id], tasks=tasks),
                    "the master refused the job's tasks",
                )
                if not accepted:
                    self.in_doubt.update(t.task_id for t in tasks)
            else:
                self._call(
                    self.cluster.scheduler.Decline,
                    scheduler_pb2.DeclineRequest(
                        framework_id=fid,
                        offer_ids=[offer.offer_id],
                        filters=scheduler_pb2.Filters(refuse_seconds=5.0 if not self.pending else 1.0),
                    ),
                    "decline",
                )

    def _updates(self, statuses) -> None:
        acks = []
        for status in statuses:
            if status.uuid:
                acks.append(scheduler_pb2.Ack(task_id=status.task_id, agent_id=status.agent_id, uuid=status.uuid))
            index = self.active.get(status.task_id)
            state = _state(status.state)
            if index is None or state not in _TERMINAL:
                continue
            del self.active[status.task_id]
            if status.task_id in self.in_doubt:
                self.in_doubt.discard(status.task_id)
                if _reason(status.reason) == "TASK_UNKNOWN":
                    self.pending.appendleft(index)  # never launched: run it
                    continue
            self.results[index] = TaskResult(
                index=index,
                task_id=status.task_id,
                agent_id=status.agent_id,
                state=state,
                reason=_reason(status.reason),
                message=status.message,
                exit_code=status.exit_code if status.HasField("exit_code") else None,
                stdout=None,
            )
        if acks:
            self._call(
                self.cluster.scheduler.Acknowledge,
                scheduler_pb2.AcknowledgeRequest(framework_id=self.info.framework_id, acks=acks),
                "acknowledge",
            )
