"""A Python client of wasmos: run WebAssembly tasks on a cluster.

Two levels. :meth:`Cluster.run` runs a module as N tasks and returns how
each ended:

>>> import wasmos
>>> results = wasmos.Cluster().run("primes.wasm", n=100, cpus=0.1, args=["{i}"])
>>> all(r.ok for r in results)

:meth:`Cluster.submit` hands the master a job instead and returns its id at
once; the master runs it (retries, dependencies, every index's outcome),
and :meth:`Cluster.wait` and :meth:`Cluster.results` find it again from
any process.

A framework that makes its own decisions subclasses :class:`Scheduler`
(callbacks for offers, updates, ...) and runs it with a
:class:`SchedulerDriver`, which acknowledges, re-subscribes and reconciles
for it; :class:`TaskTemplate` builds task specs and :class:`Resources`,
:func:`attributes` read offers.

``Cluster()`` reaches the master the CLI's profile names (``wasmos login``),
or the one given; the gRPC stubs of every service are in ``wasmos.v1``.
"""

from .cluster import Cluster
from .driver import Demand, DriverStats, FrameworkInfo, SchedulerDriver, is_terminal
from .errors import WasmosError, launch_in_doubt
from .jobs import TaskResult, reason_name, state_name
from .offers import Offer, Resources, attributes, by_agent, has_attribute, resources
from .profile import Profile
from .scheduler import Scheduler, TaskStatus
from .tasks import GiB, MiB, TaskSpec, TaskTemplate, check_task_id, task_spec

__all__ = [
    "Cluster",
    "Demand",
    "DriverStats",
    "FrameworkInfo",
    "GiB",
    "MiB",
    "Offer",
    "Profile",
    "Resources",
    "Scheduler",
    "SchedulerDriver",
    "TaskResult",
    "TaskSpec",
    "TaskStatus",
    "TaskTemplate",
    "WasmosError",
    "attributes",
    "by_agent",
    "check_task_id",
    "has_attribute",
    "is_terminal",
    "launch_in_doubt",
    "reason_name",
    "resources",
    "state_name",
    "task_spec",
]
