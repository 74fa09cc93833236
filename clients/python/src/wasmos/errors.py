"""The one exception the package raises for calls and drivers, and which
gRPC codes mean the master was merely away.

Kept apart from the connection and the driver so both can raise it
without importing each other.
"""

from __future__ import annotations

from typing import Optional

import grpc


class WasmosError(Exception):
    """A call the master refused, or a job or framework that cannot go on.

    ``code`` is the gRPC status code when the master answered with one.
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None):
        super().__init__(message)
        self.code = code


# Codes after which a call may be repeated: the master was away.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def launch_in_doubt(code: Optional[grpc.StatusCode]) -> bool:
    """Does a failed ``Accept`` with this code leave its launch in doubt?

    True when the call may have reached the master and been applied before
    the answer was lost (the connection broke, the master restarted): only
    a reconciliation can tell. False for refusals, which change nothing.
    ``ALREADY_EXISTS`` counts: an earlier launch in doubt with these ids did
    happen.
    """
    return code in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.ALREADY_EXISTS,
    }


def rpc_error(e: grpc.RpcError, what: str) -> WasmosError:
    """A :class:`WasmosError` naming the call and carrying the master's
    words and code."""
    return WasmosError(f"{what}: {e.details()}", e.code())
