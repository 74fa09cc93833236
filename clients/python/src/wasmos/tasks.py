"""Building task specs: the module to run, its limits, arguments,
environment and input files, checked here so a mistake names its field
before the master refuses the whole ``accept``.

>>> web = TaskTemplate(digest, cpus=0.25, mem=64 * MiB, args=["--port", "0"])
>>> driver.accept([offer.offer_id], [web.spec("web-1"), web.spec("web-2")])
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .offers import Resources
from .v1 import common_pb2

MiB = 1 << 20
GiB = 1 << 30

TaskSpec = common_pb2.TaskSpec

_TASK_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def check_task_id(task_id: str) -> str:
    """``task_id`` if the master would take it (1-200 characters of
    ``[A-Za-z0-9._-]``, unique in the cluster); ``ValueError`` otherwise."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise ValueError(f"a task id is 1-200 characters of [A-Za-z0-9._-]; got {task_id!r}")
    return task_id


def _check_digest(digest: Any, what: str) -> None:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(
            f"{what} must be an artifact's sha256 in lowercase hex (what Cluster.upload returns); got {digest!r}"
        )


def _check_path(path: Any) -> None:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\0" in path
        or ".." in path.split("/")
    ):
        raise ValueError(f"an input's path is relative to the sandbox root, without `..`: got {path!r}")


@dataclass(frozen=True)
class TaskTemplate:
    """What a task runs and may use; :meth:`spec` stamps a task id on it.

    ``module`` is the digest of an uploaded ``.wasm`` (:meth:`Cluster.upload`).
    ``cpus`` is a share of a core (at least 0.001), ``mem`` the cap on
    linear memory in bytes (more than 0), ``disk`` the bytes of files it
    may write (inputs count against it). ``inputs`` maps sandbox paths to
    digests of files placed there; ``input_dirs`` maps them to digests of
    tar archives unpacked there. ``max_fuel`` 0 and ``timeout`` ``None``
    (seconds) mean no limit. ``labels`` are the framework's own
    bookkeeping; ``name`` is argv[0] (default: the task id).
    """

    module: str
    cpus: float = 0.1
    mem: int = 64 * MiB
    disk: int = 0
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    input_dirs: Mapping[str, str] = field(default_factory=dict)
    max_fuel: int = 0
    timeout: Optional[float] = None
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        _check_digest(self.module, "module")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) or not (
            math.isfinite(self.cpus) and self.cpus >= 0.001
        ):
            raise ValueError(f"cpus must be a share of a core of at least 0.001; got {self.cpus!r}")
        if isinstance(self.mem, bool) or not isinstance(self.mem, int) or self.mem <= 0:
            raise ValueError(f"mem must be a whole number of bytes, more than 0; got {self.mem!r}")
        if isinstance(self.disk, bool) or not isinstance(self.disk, int) or self.disk < 0:
            raise ValueError(f"disk must be a whole number of bytes, at least 0; got {self.disk!r}")
        if isinstance(self.max_fuel, bool) or not isinstance(self.max_fuel, int) or self.max_fuel < 0:
            raise ValueError(f"max_fuel must be a whole number, at least 0 (0: no limit); got {self.max_fuel!r}")
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0
        ):
            raise ValueError(f"timeout must be seconds, more than 0, or None; got {self.timeout!r}")
        if isinstance(self.args, str):
            raise ValueError(f"args must be a list of strings, not the string {self.args!r}")
        object.__setattr__(self, "args", tuple(self.args))
        for arg in self.args:
            if not isinstance(arg, str):
                raise ValueError(f"every argument must be a string; got {arg!r}")
        for key, value in self.env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ValueError(f"an environment variable's name is non-empty, without `=` or NUL; got {key!r}")
            if not isinstance(value, str) or "\0" in value:
                raise ValueError(f"the value of {key} must be a string without NUL; got {value!r}")
        for inputs in (self.inputs, self.input_dirs):
            for path, digest in inputs.items():
                _check_path(path)
                _check_digest(digest, f"the input {path!r}")

    @property
    def resources(self) -> Resources:
        """What one task of this template needs from an offer."""
        return Resources(self.cpus, self.mem, self.disk)

    def replace(self, **changes: Any) -> "TaskTemplate":
        """A copy with some fields changed, e.g. ``t.replace(args=["2"])``."""
        return dataclasses.replace(self, **changes)

    def spec(self, task_id: str) -> TaskSpec:
        """The wire spec of one task with this id."""
        check_task_id(task_id)
        inputs = [
            common_pb2.Input(path=p, artifact=d, kind=common_pb2.INPUT_KIND_FILE) for p, d in self.inputs.items()
        ] + [
            common_pb2.Input(path=p, artifact=d, kind=common_pb2.INPUT_KIND_TAR_DIRECTORY)
            for p, d in self.input_dirs.items()
        ]
        return TaskSpec(
            task_id=task_id,
            name=self.name,
            artifact=self.module,
            args=list(self.args),
            env=[common_pb2.EnvVar(name=k, value=v) for k, v in self.env.items()],
            inputs=inputs,
            resources=self.resources.to_proto(),
            max_fuel=self.max_fuel,
            timeout_ms=math.ceil(self.timeout * 1000) if self.timeout else 0,
            labels=dict(self.labels),
        )


def task_spec(task_id: str, module: str, **limits: Any) -> TaskSpec:
    """One task's spec in one call: ``task_spec("t-1", digest, cpus=0.5,
    args=["x"])`` takes the fields of :class:`TaskTemplate`."""
    return TaskTemplate(module, **limits).spec(task_id)
