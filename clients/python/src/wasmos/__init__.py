"""A Python client of wasmos: run WebAssembly tasks on a cluster.

>>> import wasmos
>>> results = wasmos.Cluster().run("primes.wasm", n=100, cpus=0.1, args=["{i}"])
>>> all(r.ok for r in results)

``Cluster()`` reaches the master the CLI's profile names (``wasmos login``),
or the one given; the gRPC stubs of every service are in ``wasmos.v1``.
"""

from .cluster import Cluster, TaskResult, WasmosError
from .profile import Profile

__all__ = ["Cluster", "Profile", "TaskResult", "WasmosError"]
