"""What a framework is: a :class:`Scheduler` whose callbacks the
:class:`~wasmos.SchedulerDriver` calls as the master's events arrive.

Subclass it and override what matters to you; every callback does nothing
by default except :meth:`Scheduler.offers`, which declines what it is
given (offers held and unused are resources nobody else can use).

All callbacks run on the driver's one thread, in the order of the events,
so a framework needs no locks for state only its callbacks touch. They
should return promptly: while one runs, no other event is handled. A
callback that raises stops the driver (as a crash would: the framework is
not torn down, its tasks keep running for its failover timeout) and
:meth:`SchedulerDriver.join` raises the exception, with one exception: a
:class:`~wasmos.WasmosError` of a call that found the master away
(``UNAVAILABLE``, ``DEADLINE_EXCEEDED``) only cuts that callback short, as
the driver re-subscribes and reconciles anyway. A framework that must know
a call took effect (a kill, say) catches it and calls again after the next
:meth:`Scheduler.subscribed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from .v1 import common_pb2, scheduler_pb2

if TYPE_CHECKING:  # pragma: no cover
    from .driver import SchedulerDriver

Offer = scheduler_pb2.Offer
TaskStatus = common_pb2.TaskStatus


class Scheduler:
    """The callbacks of a framework. Override the ones you need."""

    def subscribed(self, driver: "SchedulerDriver", framework_id: str, resubscribed: bool) -> None:
        """The master accepted the subscription; ``framework_id`` is the
        framework's id, the same for its whole life.

        ``resubscribed`` is True when the driver lost its event stream (a
        master restart, a network fault) and subscribed again: it has then
        already asked the master for the state of every task it launched
        and saw no end of (the answers arrive as :meth:`update`), and offers
        held before are void. Suppression may have been lost with a
        restarted master: a framework with nothing to launch can call
        :meth:`SchedulerDriver.suppress` here again, one with work
        :meth:`SchedulerDriver.revive`.

        A framework resumed from a new process (its ``FrameworkInfo`` gave
        the old ``framework_id``) gets ``resubscribed=False``: it knows no
        tasks yet, so it should call :meth:`SchedulerDriver.reconcile`
        (every task of the framework) to learn what still runs.
        """

    def offers(self, driver: "SchedulerDriver", offers: List[Offer]) -> None:
        """New offers: launch tasks on them with
        :meth:`SchedulerDriver.accept`, or give them back with
        :meth:`SchedulerDriver.decline`.

        The default declines them all with the master's default filter
        (5 s), so a framework that overrides nothing still gives back what
        it cannot use.
        """
        if offers:
            driver.decline([o.offer_id for o in offers])

    def rescinded(self, driver: "SchedulerDriver", offer_ids: List[str]) -> None:
        """The master withdrew these offers (offer timeout, agent gone);
        accepting them now fails with ``NOT_FOUND``."""

    def update(self, driver: "SchedulerDriver", status: TaskStatus) -> None:
        """A task changed state (``status.state``, ``status.reason``,
        ``status.message``, ``status.exit_code``, ``status.usage``).

        Delivery is at least once: the same update may arrive again, and
        reconciliation answers arrive here too (without ``uuid``). With
        automatic acknowledgement (the default) the driver acknowledges the
        update once this callback returns, so an update whose callback
        raised is sent again to the next subscription.
        """

    def failure(self, driver: "SchedulerDriver", agent_id: str, message: str) -> None:
        """An agent that held this framework's tasks is gone; ``LOST``
        updates of its tasks follow."""

    def error(self, driver: "SchedulerDriver", message: str) -> None:
        """The subscription ended for good: the master removed the
        framework (its failover timeout passed, or an operator tore it
        down), or the driver could not subscribe again. The driver stops
        after this callback and :meth:`SchedulerDriver.join` raises
        :class:`~wasmos.WasmosError` with ``message``."""

    def disconnected(self, driver: "SchedulerDriver", reason: str) -> None:
        """The event stream broke (``reason`` says how); the driver is
        subscribing again with the same framework id. Tasks keep running;
        offers held until now are void. :meth:`subscribed` follows when it
        is back."""
