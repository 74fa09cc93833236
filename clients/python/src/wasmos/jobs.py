"""The framework behind :meth:`Cluster.run`: N tasks of one module, packed
onto offers, each run to an outcome, as a :class:`Scheduler` on the
:class:`SchedulerDriver` (which acknowledges, re-subscribes and reconciles
for it, so a master restart loses nothing).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import grpc

from .driver import Demand, SchedulerDriver, is_terminal
from .errors import TRANSIENT, WasmosError, launch_in_doubt
from .offers import Resources, has_attribute
from .scheduler import Scheduler
from .v1 import common_pb2


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


def state_name(value: int) -> str:
    """``FINISHED`` for ``TASK_STATE_FINISHED``, and so on."""
    return common_pb2.TaskState.Name(value).removeprefix("TASK_STATE_")


def reason_name(value: int) -> str:
    """``OUT_OF_FUEL`` for ``REASON_OUT_OF_FUEL``; ``""`` for none."""
    name = common_pb2.Reason.Name(value).removeprefix("REASON_")
    return "" if name == "UNSPECIFIED" else name


@dataclass
class JobTemplate:
    """The tasks of a job: ``{i}`` in args and env values becomes the
    task's index. Not checked here: the master's refusal, with its words,
    is what :meth:`Cluster.run` reports."""

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


def task_prefix(name: str) -> str:
    """Task ids allow ``[A-Za-z0-9._-]``: the job's name mapped to them,
    short, made unique by the time."""
    safe = "".join(c if c.isalnum() and c.isascii() or c in "._-" else "-" for c in name)[:60] or "job"
    return f"{safe}-{int(time.time() * 1000) % 10**9}"


class JobScheduler(Scheduler):
    """Places pending tasks on offers, records each task's end, and stops
    the driver (tearing the framework down) when all have ended."""

    def __init__(self, n: int, template: JobTemplate, prefix: str, on: Optional[Mapping[str, str]] = None):
        self.template = template
        # Attributes an agent must have for the job's tasks to run there.
        self.on = dict(on or {})
        self.need = Resources.of(common_pb2.Resources(cpus=template.cpus, mem=template.mem, disk=template.disk))
        self.prefix = prefix
        self.n = n
        self.pending = deque(range(n))
        self.active: Dict[str, int] = {}
        self.attempts = [0] * n
        # Tasks of an Accept whose answer was lost: the driver reconciles
        # them; those the master never heard of come back TASK_UNKNOWN and
        # are run again.
        self.in_doubt: set = set()
        self.results: Dict[int, TaskResult] = {}

    def ordered(self) -> List[TaskResult]:
        return [self.results[i] for i in range(self.n)]

    def demand(self) -> Optional[Demand]:
        """What the job waits to launch: its pending tasks. None for tasks
        no master would run (the master's refusal of their launch says why,
        in the task's words)."""
        if self.need.millicpus < 1 or self.need.mem < 1:
            return None
        return Demand(task=self.need.to_proto(), tasks=len(self.pending))

    def subscribed(self, driver: SchedulerDriver, framework_id: str, resubscribed: bool) -> None:
        if self.pending:
            _quietly(driver.revive, self.demand())

    def offers(self, driver: SchedulerDriver, offers) -> None:
        for offer in offers:
            if not all(has_attribute(offer, k, v) for k, v in self.on.items()):
                # An agent's attributes do not change: hold its offers back long.
                _quietly(driver.decline, [offer.offer_id], 300.0)
                continue
            free = Resources.of(offer)
            tasks, indexes = [], []
            while self.pending and free.fits(self.need):
                index = self.pending.popleft()
                self.attempts[index] += 1
                task_id = f"{self.prefix}-{index}-{self.attempts[index]}"
                tasks.append(self.template.spec(task_id, index))
                indexes.append(index)
                self.active[task_id] = index
                free = free - self.need
            if tasks:
                self._accept(driver, offer.offer_id, tasks, indexes)
            else:
                _quietly(driver.decline, [offer.offer_id], 1.0 if self.pending else 5.0)

    def _accept(self, driver: SchedulerDriver, offer_id: str, tasks, indexes: List[int]) -> None:
        try:
            driver.accept([offer_id], tasks)
        except WasmosError as e:
            if launch_in_doubt(e.code):
                self.in_doubt.update(t.task_id for t in tasks)
            elif e.code == grpc.StatusCode.NOT_FOUND:
                # The offer went away (rescinded, re-subscribed): nothing was
                # launched, and the tasks wait for other offers.
                for task, index in zip(reversed(tasks), reversed(indexes)):
                    del self.active[task.task_id]
                    self.pending.appendleft(index)
            else:
                raise WasmosError(f"the master refused the job's tasks ({e})", e.code) from None

    def update(self, driver: SchedulerDriver, status) -> None:
        index = self.active.get(status.task_id)
        if index is None or not is_terminal(status.state):
            return
        del self.active[status.task_id]
        if status.task_id in self.in_doubt:
            self.in_doubt.discard(status.task_id)
            if status.reason == common_pb2.REASON_TASK_UNKNOWN:
                self.pending.appendleft(index)  # never launched: run it
                _quietly(driver.revive, self.demand())
                return
        self.results[index] = TaskResult(
            index=index,
            task_id=status.task_id,
            agent_id=status.agent_id,
            state=state_name(status.state),
            reason=reason_name(status.reason),
            message=status.message,
            exit_code=status.exit_code if status.HasField("exit_code") else None,
            stdout=None,
        )
        if len(self.results) == self.n:
            try:
                driver.stop()  # tears the framework down
            except WasmosError:
                pass  # the master was away: it removes the framework after its failover timeout


def _quietly(call, *args) -> bool:
    """A call that the master's absence does not fail: False when it was
    away (the stream breaks too, and the driver re-subscribes)."""
    try:
        call(*args)
        return True
    except WasmosError as e:
        if e.code in TRANSIENT:
            return False
        raise
