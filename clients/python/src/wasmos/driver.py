"""The :class:`SchedulerDriver`: a framework's session with the master,
calling a :class:`~wasmos.Scheduler`'s callbacks as events arrive.

It keeps what every framework would otherwise get wrong on its own, as the
Rust SDK's session does: it acknowledges status updates (in one call per
batch, never one per task) once their callback returned; it notices a dead
event stream (an error, an end, or no heartbeat for three intervals) and
subscribes again with the same framework id, backing off, until the
failover timeout; and it then reconciles every task it launched and saw no
end of, so a master restart loses nothing.

Threads: ``start`` subscribes in the caller's thread (so a refusal raises
there), then one thread runs the event loop and every callback, a reader
thread per stream feeds it, and another sends acknowledgements. The calls
(``accept``, ``decline``, ...) may be made from callbacks or any thread;
each is one gRPC call that raises :class:`~wasmos.WasmosError` when the
master refuses it or is away. A callback cut short by the master's absence
(``UNAVAILABLE``, ``DEADLINE_EXCEEDED``) does not stop the driver: its
stream breaks too, and it re-subscribes and reconciles; an update whose
callback was cut short is not acknowledged, so it comes again.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Set, Union

import grpc

from .errors import TRANSIENT, WasmosError, launch_in_doubt, rpc_error
from .scheduler import Scheduler
from .v1 import common_pb2, scheduler_pb2

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Cluster

FrameworkInfo = scheduler_pb2.FrameworkInfo
#: What a framework waits to launch: ``tasks`` tasks of ``task`` resources
#: (set it in ``FrameworkInfo(demand=...)``, :meth:`SchedulerDriver.set_demand`
#: or :meth:`SchedulerDriver.revive`).
Demand = scheduler_pb2.Demand
log = logging.getLogger("wasmos")

#: How long ``Subscribe`` may take to answer with SUBSCRIBED.
SUBSCRIBE_TIMEOUT = 30.0
# Refusals of a subscription that no retry can change.
_FATAL = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
_TERMINAL = frozenset(
    {
        common_pb2.TASK_STATE_FINISHED,
        common_pb2.TASK_STATE_FAILED,
        common_pb2.TASK_STATE_KILLED,
        common_pb2.TASK_STATE_LOST,
        common_pb2.TASK_STATE_ERROR,
    }
)
# The proto's cap on acks (and ids) per call.
_MAX_BATCH = 50_000
_YEAR = 365 * 24 * 3600.0


def is_terminal(state: int) -> bool:
    """Whether a task in ``state`` (a ``TaskStatus.state``) never changes
    again: ``FINISHED``, ``FAILED``, ``KILLED``, ``LOST`` or ``ERROR``."""
    return state in _TERMINAL


@dataclass(frozen=True)
class DriverStats:
    """Counters of a driver, for monitoring and tests."""

    #: ``Acknowledge`` calls made by automatic acknowledgement.
    acknowledge_calls: int
    #: Updates acknowledged by those calls.
    acknowledged: int
    #: Successful subscriptions after a lost stream.
    resubscriptions: int


def _ids(value: Union[str, Iterable[str]], what: str) -> List[str]:
    """A list of ids; one id may be given as a plain string."""
    if isinstance(value, str):
        return [value]
    ids = list(value)
    for id_ in ids:
        if not isinstance(id_, str) or not id_:
            raise TypeError(f"{what} must be non-empty strings; got {id_!r}")
    return ids


def _filters(refuse_seconds: Optional[float]) -> Optional[scheduler_pb2.Filters]:
    if refuse_seconds is None:
        return None
    if (
        isinstance(refuse_seconds, bool)
        or not isinstance(refuse_seconds, (int, float))
        or not math.isfinite(refuse_seconds)
        or not 0 <= refuse_seconds <= _YEAR
    ):
        raise ValueError(f"refuse_seconds must be between 0 and a year, or None (5 s); got {refuse_seconds!r}")
    return scheduler_pb2.Filters(refuse_seconds=float(refuse_seconds))


class SchedulerDriver:
    """Runs ``scheduler`` as the framework ``framework`` on ``cluster``.

    ``framework`` is a :class:`wasmos.FrameworkInfo` with at least a
    ``name`` (and ``role``, ``user``, ``failover_timeout_ms`` as wanted);
    give it the ``framework_id`` of a framework stopped with
    ``stop(failover=True)`` to resume that framework, tasks and all, from
    a new process within its failover timeout.

    With ``auto_acknowledge`` (the default) every status update is
    acknowledged once :meth:`Scheduler.update` returned; turn it off only
    to acknowledge after an update is safely stored, with
    :meth:`acknowledge` (unacknowledged updates are sent again). The stream
    counts as dead after three heartbeat intervals without an event, never
    less than ``min_heartbeat_timeout`` seconds; re-subscriptions back off
    from 0.1 s to ``max_backoff`` seconds.

    >>> driver = SchedulerDriver(MyScheduler(), FrameworkInfo(name="web"), cluster)
    >>> driver.run()          # start(), then join(): until stop() or an error
    """

    def __init__(
        self,
        scheduler: Scheduler,
        framework: FrameworkInfo,
        cluster: "Cluster",
        *,
        auto_acknowledge: bool = True,
        min_heartbeat_timeout: float = 15.0,
        max_backoff: float = 5.0,
    ):
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"scheduler must be a wasmos.Scheduler (a subclass of it); got {type(scheduler).__name__}")
        if not isinstance(framework, FrameworkInfo):
            raise TypeError(
                f"framework must be a wasmos.FrameworkInfo(name=...); got {type(framework).__name__}"
            )
        from .cluster import Cluster  # here: cluster.py imports this module

        if not isinstance(cluster, Cluster):
            raise TypeError(f"cluster must be a wasmos.Cluster (a connection); got {type(cluster).__name__}")
        if not framework.name:
            raise ValueError('a framework needs a name: wasmos.FrameworkInfo(name="my-framework")')
        if min_heartbeat_timeout <= 0 or max_backoff <= 0:
            raise ValueError("min_heartbeat_timeout and max_backoff must be more than 0 seconds")
        self._scheduler = scheduler
        self._info = FrameworkInfo()
        self._info.CopyFrom(framework)
        self._cluster = cluster
        self._stub = cluster.scheduler
        self._metadata = cluster._metadata
        self._auto_acknowledge = auto_acknowledge
        self._min_heartbeat_timeout = float(min_heartbeat_timeout)
        self._max_backoff = float(max_backoff)

        self._framework_id = framework.framework_id
        self._lock = threading.Lock()
        # (stream generation, "event" | "lost" | "stop", payload)
        self._events: "queue.Queue" = queue.Queue()
        self._acks: "queue.Queue" = queue.Queue()
        # Tasks launched and not yet seen terminal: reconciled after a
        # re-subscription.
        self._known: Set[str] = set()
        self._generation = 0
        self._stream = None
        self._started = False
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._tearing_down = False
        self._torn_down = False
        # The master ended the framework, or refused it for good, or this
        # driver never subscribed: stop() has nothing to tear down.
        self._removed = False
        self._failure: Optional[BaseException] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._ack_thread: Optional[threading.Thread] = None
        self._heartbeat_interval = 0.0
        self._longest_gap = 0.0
        self._last_heartbeat: Optional[float] = None
        self._last_event = 0.0
        self._failover_timeout = (framework.failover_timeout_ms or 60_000) / 1000
        self._acknowledge_calls = 0
        self._acknowledged = 0
        self._resubscriptions = 0
        # The newest master epoch seen: a master of an older one is a stale
        # master still running (a deposed leader), and is refused.
        self._master_epoch = 0

    def __repr__(self) -> str:
        return f"SchedulerDriver(framework_id={self._framework_id!r}, name={self._info.name!r})"

    @property
    def framework_id(self) -> str:
        """The framework's id: empty until subscribed, then the same across
        re-subscriptions."""
        return self._framework_id

    @property
    def stats(self) -> DriverStats:
        """The driver's counters."""
        return DriverStats(self._acknowledge_calls, self._acknowledged, self._resubscriptions)

    # -- life cycle ---------------------------------------------------------

    def start(self) -> str:
        """Subscribes (raising :class:`~wasmos.WasmosError` if the master
        refuses or does not answer within 30 s) and starts handling events
        on the driver's thread. Returns the framework's id."""
        with self._lock:
            if self._started:
                raise WasmosError("this driver was already started; a driver runs once (make a new one)")
            self._started = True
        try:
            self._open()
        except BaseException:
            self._removed = True  # nothing for stop() to end
            self._stopping.set()
            self._done.set()
            raise
        self._ack_thread = threading.Thread(target=self._acknowledge_loop, name="wasmos-acks", daemon=True)
        self._ack_thread.start()
        self._loop_thread = threading.Thread(target=self._loop, name="wasmos-driver", daemon=True)
        self._loop_thread.start()
        return self._framework_id

    def join(self, timeout: Optional[float] = None) -> bool:
        """Waits until the driver stops, or ``timeout`` seconds. Returns
        False on timeout, True once stopped by :meth:`stop`; raises what
        ended it otherwise (a callback's exception, or
        :class:`~wasmos.WasmosError` when the framework was removed or
        could not subscribe again)."""
        if not self._started:
            raise WasmosError("the driver was never started: call start() or run()")
        if threading.current_thread() is self._loop_thread:
            raise WasmosError("join() from a callback would wait for itself; call stop() and return")
        if not self._done.wait(timeout):
            return False
        if self._failure is not None:
            raise self._failure
        return True

    def run(self) -> None:
        """:meth:`start`, then :meth:`join`: handles events until the
        framework stops (a callback calls :meth:`stop`) or fails."""
        self.start()
        self.join()

    def stop(self, failover: bool = False) -> None:
        """Stops the driver. Without ``failover`` the framework is torn
        down (the master kills its tasks and forgets it). With it the event
        stream is closed and nothing else: the master keeps the framework
        and its tasks for the failover timeout, and a new driver given its
        ``framework_id`` resumes it. Pending acknowledgements are sent
        before the driver's thread ends either way. Safe to call from a
        callback, and more than once; ``stop()`` after the driver ended by
        a callback's exception still tears the framework down.
        """
        with self._lock:
            if not self._started:
                self._started = True
                self._stopping.set()
                self._done.set()
                return
            # A driver ended by a callback's exception is still torn down
            # by stop(); one the master removed has nothing left to end.
            teardown = not failover and bool(self._framework_id) and not (self._torn_down or self._removed)
            if teardown:
                self._torn_down = self._tearing_down = True
            stopping = self._stopping.is_set()
        refused: Optional[WasmosError] = None
        if teardown:
            try:
                self._call("Teardown", scheduler_pb2.TeardownRequest(framework_id=self._framework_id), "teardown")
            except WasmosError as e:
                refused = e
        if not stopping:
            with self._lock:
                self._stopping.set()
                stream = self._stream
            self._events.put((None, "stop", None))
            if stream is not None:
                stream.cancel()
        if refused is not None:
            raise refused

    def teardown(self) -> None:
        """Ends the framework for good and stops the driver: the master
        kills its tasks and forgets it (``stop(failover=False)``)."""
        self.stop(failover=False)

    # -- the calls a framework makes -----------------------------------------

    def accept(
        self,
        offer_ids: Union[str, Iterable[str]],
        tasks: Sequence[common_pb2.TaskSpec],
        refuse_seconds: Optional[float] = None,
    ) -> List[str]:
        """Launches ``tasks`` (specs from :class:`~wasmos.TaskTemplate`) on
        ``offer_ids``, offers of one agent whose sum the tasks must fit.
        What they leave unused goes back, held from this framework for
        ``refuse_seconds`` (None: the master's 5 s). All or nothing: one
        bad spec refuses the call (``INVALID_ARGUMENT``). Returns the
        launched task ids.

        If the master went away mid-call (``wasmos.launch_in_doubt(e.code)``
        is True for the error), the launch may have happened: the driver
        reconciles those ids (now, and again after it re-subscribes) and
        the answers arrive as updates, ``LOST`` with reason
        ``TASK_UNKNOWN`` for a launch that never happened. Never launch the
        same ids again on a guess.
        """
        offers = _ids(offer_ids, "offer_ids")
        if not offers:
            raise ValueError("accept needs at least one offer id")
        specs = list(tasks)
        for spec in specs:
            if not isinstance(spec, common_pb2.TaskSpec):
                raise TypeError(f"tasks must be TaskSpec messages (TaskTemplate.spec(task_id)); got {spec!r}")
        ids = [spec.task_id for spec in specs]
        request = scheduler_pb2.AcceptRequest(
            framework_id=self._framework_id, offer_ids=offers, tasks=specs, filters=_filters(refuse_seconds)
        )
        # Known before the call: an update may overtake the answer.
        with self._lock:
            self._known.update(ids)
        try:
            reply = self._call("Accept", request, "accept")
        except WasmosError as e:
            if launch_in_doubt(e.code):
                try:
                    self.reconcile(ids)
                except WasmosError:
                    pass  # it is reconciled again after the re-subscription
            else:
                with self._lock:
                    self._known.difference_update(ids)
            raise
        return list(reply.task_ids)

    def decline(self, offer_ids: Union[str, Iterable[str]], refuse_seconds: Optional[float] = None) -> None:
        """Gives offers back. Their agents are not offered to this framework
        again for ``refuse_seconds`` (None: the master's 5 s; 0: at once),
        so decline with a long filter what you will never use."""
        offers = _ids(offer_ids, "offer_ids")
        if offers:
            self._call(
                "Decline",
                scheduler_pb2.DeclineRequest(
                    framework_id=self._framework_id, offer_ids=offers, filters=_filters(refuse_seconds)
                ),
                "decline",
            )

    def kill(self, task_ids: Union[str, Iterable[str]]) -> None:
        """Asks the agents to kill tasks (one call for all); their
        ``KILLED`` updates follow. An id the master does not know of fails
        the call with ``NOT_FOUND``."""
        ids = _ids(task_ids, "task_ids")
        if ids:
            self._call("Kill", scheduler_pb2.KillRequest(framework_id=self._framework_id, task_ids=ids), "kill")

    def reconcile(self, task_ids: Union[str, Iterable[str]] = ()) -> None:
        """Asks for the latest state of ``task_ids``, or of every task of
        the framework the master knows when empty. The answers arrive as
        updates without ``uuid``; a task the master does not know comes
        back ``LOST`` with reason ``TASK_UNKNOWN``."""
        ids = _ids(task_ids, "task_ids")
        self._call(
            "Reconcile",
            scheduler_pb2.ReconcileRequest(framework_id=self._framework_id, task_ids=ids),
            "reconcile",
        )

    def suppress(self) -> None:
        """Stops offers until :meth:`revive`: for a framework with nothing
        to launch, so it does not churn through offers."""
        self._call("Suppress", scheduler_pb2.SuppressRequest(framework_id=self._framework_id), "suppress")

    def revive(self, demand: Optional[Demand] = None) -> None:
        """Asks for offers again and clears every decline filter; with
        ``demand``, also declares it (see :meth:`set_demand`)."""
        request = scheduler_pb2.ReviveRequest(framework_id=self._framework_id, demand=demand)
        self._call("Revive", request, "revive")

    def set_demand(self, demand: Optional[Demand]) -> None:
        """Declares what the framework waits to launch:
        ``wasmos.Demand(task=Resources(cpus=1, mem=GiB).to_proto(), tasks=20)``.
        The master then sizes offers by dominant resource fairness at task
        granularity, so frameworks of different task shapes share agents
        fairly, and counts one off for every task launched. ``None``
        declares nothing (whole free agents are offered). Filters and
        suppression stay as they are."""
        request = scheduler_pb2.SetDemandRequest(framework_id=self._framework_id, demand=demand)
        self._call("SetDemand", request, "set demand")

    def acknowledge(self, statuses: Iterable[common_pb2.TaskStatus]) -> None:
        """Acknowledges updates in one call so their agents stop resending
        them. Only for a driver made with ``auto_acknowledge=False``;
        updates without ``uuid`` (reconciliation answers) are skipped."""
        acks = [
            scheduler_pb2.Ack(task_id=s.task_id, agent_id=s.agent_id, uuid=s.uuid) for s in statuses if s.uuid
        ]
        for at in range(0, len(acks), _MAX_BATCH):
            self._call(
                "Acknowledge",
                scheduler_pb2.AcknowledgeRequest(framework_id=self._framework_id, acks=acks[at : at + _MAX_BATCH]),
                "acknowledge",
            )

    def _call(self, method: str, request, what: str):
        if not self._framework_id:
            raise WasmosError(f"{what}: the driver has not subscribed yet (call start() first)")
        return self._cluster.call(getattr(self._stub, method), request, what)

    # -- the session ------------------------------------------------------------

    def _open(self) -> scheduler_pb2.Subscribed:
        """Opens an event stream and waits for SUBSCRIBED; a reader thread
        then feeds the stream's events to the loop, tagged with the
        stream's generation so a dropped stream's stragglers are ignored."""
        info = FrameworkInfo()
        info.CopyFrom(self._info)
        info.framework_id = self._framework_id
        if self._framework_id:
            # A re-subscription keeps what the master counted down since.
            info.ClearField("demand")
        with self._lock:
            if self._stopping.is_set():
                raise WasmosError("the driver is stopping", grpc.StatusCode.CANCELLED)
            self._generation += 1
            generation = self._generation
            stream = self._stub.Subscribe(scheduler_pb2.SubscribeRequest(framework=info), metadata=self._metadata)
            self._stream = stream
        handshake: "queue.Queue" = queue.Queue()
        threading.Thread(
            target=self._read, args=(generation, stream, handshake), name="wasmos-events", daemon=True
        ).start()
        try:
            ok, first = handshake.get(timeout=SUBSCRIBE_TIMEOUT)
        except queue.Empty:
            stream.cancel()
            raise WasmosError(
                f"subscribe: no answer from the master within {SUBSCRIBE_TIMEOUT:.0f} s",
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ) from None
        if not ok:
            raise first
        kind = first.WhichOneof("kind")
        if kind == "error":
            raise WasmosError(f"subscribe: the master ended the subscription: {first.error.message}")
        if kind != "subscribed":
            stream.cancel()
            raise WasmosError(f"subscribe: the master's first event was {kind}, not subscribed")
        subscribed = first.subscribed
        if subscribed.master_epoch < self._master_epoch:
            stream.cancel()
            raise WasmosError(
                f"subscribe: a master of epoch {subscribed.master_epoch} answered, older than epoch "
                f"{self._master_epoch} seen before: a stale master; refusing it",
                grpc.StatusCode.UNAVAILABLE,
            )
        self._master_epoch = subscribed.master_epoch
        self._framework_id = subscribed.framework_id
        self._heartbeat_interval = subscribed.heartbeat_interval_ms / 1000
        if subscribed.failover_timeout_ms:
            self._failover_timeout = subscribed.failover_timeout_ms / 1000
        self._longest_gap = 0.0
        self._last_heartbeat = None
        self._last_event = time.monotonic()
        return subscribed

    def _read(self, generation: int, stream, handshake: "queue.Queue") -> None:
        first = True
        try:
            for event in stream:
                if first:
                    first = False
                    handshake.put((True, event))
                else:
                    self._events.put((generation, "event", event))
            reason = "the master closed the event stream"
        except grpc.RpcError as e:
            if first:
                handshake.put((False, rpc_error(e, "subscribe")))
                return
            reason = f"the event stream failed: {e.code().name}: {e.details()}"
        if first:
            handshake.put(
                (False, WasmosError("subscribe: the master closed the stream unanswered", grpc.StatusCode.UNAVAILABLE))
            )
            return
        self._events.put((generation, "lost", reason))

    def _drop_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def _dead_after(self) -> float:
        """Silence after which the stream counts as dead: three announced
        heartbeat intervals or three of the longest gap seen (the announced
        one is not always the real one), never less than the floor."""
        return max(3 * self._heartbeat_interval, 3 * self._longest_gap, self._min_heartbeat_timeout)

    def _loop(self) -> None:
        try:
            self._callback("subscribed", self._framework_id, False)
            while True:
                reason = self._pump()
                if reason is None:
                    return
                self._drop_stream()
                if self._tearing_down or self._stopping.is_set():
                    return
                self._callback("disconnected", reason)
                if not self._resubscribe():
                    return
                self._resubscriptions += 1
                with self._lock:
                    known = sorted(self._known)
                for at in range(0, len(known), _MAX_BATCH):
                    try:
                        self.reconcile(known[at : at + _MAX_BATCH])
                    except WasmosError:
                        break  # the stream is broken again: the next round reconciles
                self._callback("subscribed", self._framework_id, True)
        except BaseException as e:  # a callback's exception ends the driver
            if isinstance(e, WasmosError) and (self._tearing_down or self._stopping.is_set()):
                # A call of a callback that raced with stop(): moot.
                log.debug("a call after stop() failed: %s", e)
            else:
                self._failure = e
        finally:
            self._stopping.set()
            self._drop_stream()
            self._acks.put(None)
            if self._ack_thread is not None:
                self._ack_thread.join()
            self._done.set()

    def _pump(self) -> Optional[str]:
        """Handles events until the stream is lost (returns why) or the
        driver stops (returns None)."""
        while True:
            if self._stopping.is_set():
                return None
            dead_after = self._dead_after()
            left = self._last_event + dead_after - time.monotonic()
            if left <= 0:
                return f"no event from the master for {dead_after:.0f} s"
            try:
                generation, kind, payload = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if kind == "stop":
                return None
            if generation != self._generation:
                continue
            if kind == "lost":
                return payload
            self._last_event = time.monotonic()
            if not self._dispatch(payload):
                return None

    def _dispatch(self, event: scheduler_pb2.Event) -> bool:
        """Calls the callback of one event; False after the last one."""
        kind = event.WhichOneof("kind")
        if kind == "heartbeat":
            now = time.monotonic()
            if self._last_heartbeat is not None:
                self._longest_gap = min(max(self._longest_gap, now - self._last_heartbeat), 120.0)
            self._last_heartbeat = now
        elif kind == "offers":
            self._callback("offers", list(event.offers.offers))
        elif kind == "rescind":
            self._callback("rescinded", list(event.rescind.offer_ids))
        elif kind == "updates":
            statuses = list(event.updates.statuses)
            with self._lock:
                self._known.difference_update(s.task_id for s in statuses if s.state in _TERMINAL)
            for status in statuses:
                if self._stopping.is_set():
                    return False  # stopped by an earlier update's callback
                # Acknowledged only once handled: one whose callback did
                # not finish is sent again.
                if self._callback("update", status) and self._auto_acknowledge and status.uuid:
                    self._acks.put(
                        scheduler_pb2.Ack(task_id=status.task_id, agent_id=status.agent_id, uuid=status.uuid)
                    )
        elif kind == "failure":
            self._callback("failure", event.failure.agent_id, event.failure.message)
        elif kind == "error":
            if self._tearing_down:
                return False
            self._fail(f"the master removed the framework: {event.error.message}")
            return False
        return True

    def _callback(self, name: str, *args) -> bool:
        """Calls one of the scheduler's callbacks; False if it was cut short
        by a call that found the master away (``UNAVAILABLE``,
        ``DEADLINE_EXCEEDED``). That is no reason to stop: the stream breaks
        too, and the driver re-subscribes and reconciles. Any other
        exception ends the driver."""
        try:
            getattr(self._scheduler, name)(self, *args)
            return True
        except WasmosError as e:
            if e.code not in TRANSIENT:
                raise
            log.warning("the %s callback was cut short; the master is away: %s", name, e)
            return False

    def _fail(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        self._removed = True
        self._failure = WasmosError(message, code)
        self._scheduler.error(self, message)

    def _resubscribe(self) -> bool:
        """Subscribes again with the framework's id, backing off, until the
        failover timeout passes or the master refuses for good."""
        started = time.monotonic()
        backoff = 0.1
        while not self._stopping.is_set():
            if time.monotonic() - started > self._failover_timeout:
                self._fail(
                    f"could not subscribe again within the failover timeout of {self._failover_timeout:.0f} s; "
                    "the master has removed the framework and killed its tasks",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                return False
            try:
                self._open()
                return True
            except WasmosError as e:
                if self._stopping.is_set():
                    return False
                if e.code is None or e.code in _FATAL:
                    self._fail(f"subscribing again was refused: {e}", e.code)
                    return False
            self._stopping.wait(backoff + random.uniform(0, backoff / 4))
            backoff = min(backoff * 2, self._max_backoff)
        return False

    def _acknowledge_loop(self) -> None:
        """Sends queued acknowledgements: one call per batch, the batch
        being everything queued while the previous call was in flight.
        A failed call is harmless: the updates are sent again."""
        last = False
        while not last:
            first = self._acks.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    ack = self._acks.get_nowait()
                except queue.Empty:
                    break
                if ack is None:
                    last = True
                    break
                batch.append(ack)
            self._acknowledge_calls += 1
            self._acknowledged += len(batch)
            try:
                self._stub.Acknowledge(
                    scheduler_pb2.AcknowledgeRequest(framework_id=self._framework_id, acks=batch),
                    metadata=self._metadata,
                    timeout=30,
                )
            except grpc.RpcError:
                pass
