"""A connection to a master, and jobs of N tasks run through it.

A job is a framework of its own (``jobs.py``) on the package's one
:class:`SchedulerDriver`: it uploads the module once, packs pending tasks
onto the offers it gets and tears the framework down at the end; the
driver acknowledges statuses in batches, re-subscribes a lost event stream
with the same framework id and reconciles the tasks in flight, so a master
restart loses nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import grpc

from .driver import FrameworkInfo, SchedulerDriver
from .errors import WasmosError, rpc_error
from .jobs import JobScheduler, JobTemplate, TaskResult, reason_name, state_name, task_prefix
from .profile import Profile
from .v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    common_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    scheduler_pb2_grpc,
)

__all__ = ["Cluster", "TaskResult", "WasmosError"]

MiB = 1 << 20


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
        self.jobs_service = jobs_pb2_grpc.JobsStub(self._channel)

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
            raise rpc_error(e, what) from None

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
                raise rpc_error(e, "stat of the artifact") from None

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
        on: Optional[Mapping[str, str]] = None,
    ) -> List[TaskResult]:
        """Runs ``module`` (a ``.wasm`` path or its bytes) as ``n`` tasks and
        returns how each ended, in index order.

        ``{i}`` in ``args`` and ``env`` values becomes the task's index.
        Each task gets ``cpus`` (a share of a core), ``mem`` bytes of linear
        memory, ``disk`` bytes of files, ``max_fuel`` (0: no limit) and a
        wall-clock ``timeout`` in seconds. ``on`` runs them only on agents
        with those attributes: every agent reports ``os`` and ``arch``
        (``on={"arch": "aarch64"}``). With ``read_stdout`` each
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
        template = JobTemplate(digest, list(args), dict(env or {}), cpus, mem, disk, max_fuel, timeout)
        job = JobScheduler(n, template, task_prefix(name), on)
        # The job's tasks are declared, so the master sizes offers for them
        # by DRF alongside other frameworks.
        info = FrameworkInfo(
            name=name,
            role=role,
            user=getpass.getuser(),
            failover_timeout_ms=60_000,
            demand=job.demand(),
        )
        driver = SchedulerDriver(job, info, self)
        driver.start()
        try:
            if not driver.join(timeout=deadline):
                raise WasmosError(f"the job did not end in time: {len(job.results)} of {n} tasks ended")
        finally:
            try:
                driver.stop()  # tears down a job that failed or timed out
            except WasmosError:
                pass
        results = job.ordered()
        if read_stdout:
            results = [
                _with_stdout(r, self.read_stdout(r.task_id, r.agent_id))
                if r.state in ("FINISHED", "FAILED")
                else r
                for r in results
            ]
        return results

    def submit(
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
        retry: Optional[Mapping] = None,
        max_failed: int = 0,
        max_running: int = 0,
        priority: int = 0,
        deadline: Optional[float] = None,
        after: Sequence[str] = (),
        after_any: Sequence[str] = (),
        after_failed: Sequence[str] = (),
        after_each: str = "",
        hold: bool = False,
        idempotency_key: str = "",
        on: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Hands the master a job of ``n`` indices of ``module`` and returns
        its id at once: the master runs it, whether or not this process
        stays (unlike :meth:`run`, which drives a job itself).

        ``{i}`` in ``args`` and ``env`` values becomes the index; the task
        also finds it in ``WASMOS_INDEX`` and its attempt in
        ``WASMOS_ATTEMPT``. ``retry`` is ``{"max_attempts": 3, "states":
        ["LOST"], "reasons": ["AGENT_LOST"], "exit_codes": [75]}`` (each
        entry retries on its own; unset: the master's default, the lost
        ones). ``deadline`` is in seconds after submission. ``on`` runs
        the indices only on agents with those attributes (``{"arch":
        "aarch64"}``), as for :meth:`run`.
        """
        data = module if isinstance(module, bytes) else Path(module).read_bytes()
        if name is None:
            name = Path(module).stem if not isinstance(module, bytes) else "job"
        template = JobTemplate(
            self.upload(data), list(args), dict(env or {}), cpus, mem, disk, max_fuel, timeout
        )
        task = template.spec("", 0)
        # The master fills in `{i}`: the template keeps it.
        del task.args[:]
        task.args.extend(args)
        del task.env[:]
        task.env.extend(common_pb2.EnvVar(name=k, value=v) for k, v in (env or {}).items())
        spec = jobs_pb2.JobSpec(
            name=name,
            role=role,
            task=task,
            count=n,
            max_failed=max_failed,
            max_running=max_running,
            priority=priority,
            deadline_ms=int(deadline * 1000) if deadline else 0,
            after=list(after),
            after_any=list(after_any),
            after_failed=list(after_failed),
            after_each=after_each,
            hold=hold,
            idempotency_key=idempotency_key,
            on=[common_pb2.Attribute(key=k, value=v) for k, v in (on or {}).items()],
        )
        if retry is not None:
            spec.retry.CopyFrom(_retry_policy(retry))
        answer = self.call(
            self.jobs_service.Submit, jobs_pb2.SubmitJobRequest(spec=spec), "submitting the job"
        )
        return answer.job_id

    def job(self, job_id: str):
        """A job's summary (``state``, ``count``, ``succeeded``, ``failed``,
        ``running``, ``reason``, ...), as the master keeps it."""
        return self.call(self.jobs_service.Get, jobs_pb2.JobRequest(job_id=job_id), f"job {job_id}")

    def jobs(self) -> list:
        """Every job this caller may see, oldest first."""
        found, after = [], ""
        while True:
            page = self.call(
                self.jobs_service.List, jobs_pb2.ListJobsRequest(after=after, limit=1000), "listing jobs"
            )
            found.extend(page.jobs)
            if not page.next:
                return found
            after = page.next

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 0.2):
        """Waits for a job to end; its last summary. Raises
        :class:`WasmosError` if it has not ended within ``timeout`` seconds."""
        ends = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if jobs_pb2.JobState.Name(job.state) in _ENDED:
                return job
            if time.monotonic() >= ends:
                raise WasmosError(f"{job_id} did not end within {timeout} s")
            time.sleep(poll)

    def results(self, job_id: str, *, failed_only: bool = False, read_stdout: bool = False) -> List[TaskResult]:
        """How each index of a job ended, in index order (an index that
        never ran has an empty ``task_id``)."""
        results, start = [], 0
        while True:
            page = self.call(
                self.jobs_service.Results,
                jobs_pb2.JobResultsRequest(job_id=job_id, from_index=start, limit=10_000, failed_only=failed_only),
                f"results of {job_id}",
            )
            for r in page.results:
                o = r.outcome
                result = TaskResult(
                    index=r.index,
                    task_id=r.task_id,
                    agent_id=o.agent_id,
                    state=state_name(o.task_state) if r.task_id else "",
                    reason=reason_name(o.reason),
                    message="",
                    exit_code=o.exit_code if o.HasField("exit_code") else None,
                    stdout=None,
                )
                if read_stdout and r.task_id:
                    result = _with_stdout(result, self.read_stdout(r.task_id, o.agent_id))
                results.append(result)
            if page.next_index == 0:
                return results
            start = page.next_index

    def cancel_job(self, job_id: str):
        """Kills what runs of a job and starts nothing more."""
        return self.call(self.jobs_service.Cancel, jobs_pb2.JobRequest(job_id=job_id), f"cancel of {job_id}")

    def hold_job(self, job_id: str):
        """Nothing more of the job starts until :meth:`release_job`."""
        return self.call(self.jobs_service.Hold, jobs_pb2.JobRequest(job_id=job_id), f"hold of {job_id}")

    def release_job(self, job_id: str):
        """Lets a held job start again."""
        return self.call(self.jobs_service.Release, jobs_pb2.JobRequest(job_id=job_id), f"release of {job_id}")

    def retry_job(self, job_id: str, cancelled: bool = False):
        """Runs a job's failed indices (and cancelled ones, with
        ``cancelled``) again, each as a new attempt."""
        return self.call(
            self.jobs_service.Retry,
            jobs_pb2.RetryJobRequest(job_id=job_id, cancelled=cancelled),
            f"retry of {job_id}",
        )


_ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


def _retry_policy(retry: Mapping) -> "common_pb2.RetryPolicy":
    """``{"max_attempts": 3, "states": [...], "reasons": [...], "exit_codes":
    [...]}`` as the wire's policy: one rule per entry."""
    policy = common_pb2.RetryPolicy(max_attempts=int(retry.get("max_attempts", 3)))
    for state in retry.get("states", ()):
        policy.rules.add(states=[common_pb2.TaskState.Value("TASK_STATE_" + state.upper())])
    for reason in retry.get("reasons", ()):
        policy.rules.add(reasons=[common_pb2.Reason.Value("REASON_" + reason.upper())])
    for code in retry.get("exit_codes", ()):
        policy.rules.add(exit_codes=[int(code)])
    return policy


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
