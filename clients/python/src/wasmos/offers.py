"""Reading offers: what an agent offers (:class:`Resources`) and what it is
(its attributes), so a framework's ``offers`` callback reads as its policy.

Offers themselves stay the wire's ``wasmos.v1`` ``Offer`` messages
(``offer_id``, ``agent_id``, ``hostname``, ``attributes``, ``resources``,
``reservation_role``); these helpers only read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Union

from .v1 import common_pb2, scheduler_pb2

Offer = scheduler_pb2.Offer


@dataclass(frozen=True)
class Resources:
    """CPU share (cores), memory and disk (bytes): what an offer holds or a
    task needs.

    CPUs are compared in thousandths of a core, as the master counts them,
    so ten tasks of 0.1 fit an offer of 1.0 despite float rounding.
    """

    cpus: float = 0.0
    mem: int = 0
    disk: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.cpus) or self.cpus < 0:
            raise ValueError(f"cpus must be a finite number of cores, at least 0; got {self.cpus!r}")
        for field in ("mem", "disk"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{field} must be a whole number of bytes, at least 0; got {value!r}")

    @classmethod
    def of(cls, source: Union[Offer, common_pb2.Resources]) -> "Resources":
        """The resources of an offer (or of a wire ``Resources`` message)."""
        r = source.resources if isinstance(source, Offer) else source
        return cls(cpus=r.cpus, mem=r.mem, disk=r.disk)

    @classmethod
    def total(cls, offers: Iterable[Offer]) -> "Resources":
        """The sum of several offers, e.g. all of one agent's."""
        sum_ = cls()
        for offer in offers:
            sum_ = sum_ + cls.of(offer)
        return sum_

    @property
    def millicpus(self) -> int:
        """The CPU share in thousandths of a core."""
        return round(self.cpus * 1000)

    def fits(self, need: "Resources") -> bool:
        """Whether ``need`` fits in these resources."""
        return need.millicpus <= self.millicpus and need.mem <= self.mem and need.disk <= self.disk

    def __add__(self, other: "Resources") -> "Resources":
        return Resources((self.millicpus + other.millicpus) / 1000, self.mem + other.mem, self.disk + other.disk)

    def __sub__(self, need: "Resources") -> "Resources":
        """What is left after ``need`` is taken; ``ValueError`` if it does
        not fit (check with :meth:`fits` first)."""
        if not self.fits(need):
            raise ValueError(f"{need} does not fit in {self}")
        return Resources((self.millicpus - need.millicpus) / 1000, self.mem - need.mem, self.disk - need.disk)

    def to_proto(self) -> common_pb2.Resources:
        """The wire message, for a task spec."""
        return common_pb2.Resources(cpus=self.cpus, mem=self.mem, disk=self.disk)


def resources(offer: Offer) -> Resources:
    """What ``offer`` holds."""
    return Resources.of(offer)


def attributes(offer: Offer) -> Dict[str, str]:
    """The offering agent's attributes (``wasmos agent --attr k=v``), as a
    dict."""
    return {a.key: a.value for a in offer.attributes}


def has_attribute(offer: Offer, key: str, value: Optional[str] = None) -> bool:
    """Whether the offering agent has attribute ``key`` (with ``value``,
    when given)."""
    attrs = attributes(offer)
    return key in attrs and (value is None or attrs[key] == value)


def by_agent(offers: Iterable[Offer]) -> Dict[str, List[Offer]]:
    """Offers grouped by agent, in arrival order: one ``accept`` may use
    several offers, but only of one agent."""
    groups: Dict[str, List[Offer]] = {}
    for offer in offers:
        groups.setdefault(offer.agent_id, []).append(offer)
    return groups
