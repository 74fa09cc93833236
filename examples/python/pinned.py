#!/usr/bin/env python3
"""A framework that runs a module as N tasks only on agents with a given
attribute, retries failed tasks itself, and prints a summary.

    python examples/python/pinned.py hello.wasm --attr zone=eu-1 -n 10 --retries 2 -- "{i}"

It reaches the master as the CLI does (`wasmos login`, or WASMOS_MASTER,
WASMOS_CA, WASMOS_TOKEN). `{i}` in the module's arguments becomes the
task's index. Agents get attributes with `wasmos agent --attr zone=eu-1`.
Exits 0 when every task finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import Dict, List

import wasmos


class Pinned(wasmos.Scheduler):
    """Places tasks on offers of agents with ``key=value``; declines the
    rest for an hour (they will never do). A task that fails is launched
    again, as a new task id, until ``attempts`` runs are spent."""

    def __init__(self, template: wasmos.TaskTemplate, n: int, key: str, value: str, attempts: int):
        self.template = template
        self.key, self.value = key, value
        self.max_attempts = attempts
        self.prefix = f"pinned-{int(time.time() * 1000) % 10**9}"
        self.pending = deque(range(n))
        self.attempts = [0] * n
        self.active: Dict[str, int] = {}  # task id -> index
        self.outcomes: Dict[int, wasmos.TaskStatus] = {}
        self.hostnames: Dict[str, str] = {}  # agent id -> hostname
        self.suppressed = False

    def subscribed(self, driver: wasmos.SchedulerDriver, framework_id: str, resubscribed: bool) -> None:
        print(f"framework {framework_id}{' (again)' if resubscribed else ''}", file=sys.stderr)
        if resubscribed and self.pending:
            driver.revive()  # a restarted master may have kept us suppressed

    def offers(self, driver: wasmos.SchedulerDriver, offers: List[wasmos.Offer]) -> None:
        for agent_id, group in wasmos.by_agent(offers).items():
            ids = [o.offer_id for o in group]
            self.hostnames[agent_id] = group[0].hostname
            if not wasmos.has_attribute(group[0], self.key, self.value):
                driver.decline(ids, refuse_seconds=3600)
                continue
            free, tasks = wasmos.Resources.total(group), []
            while self.pending and free.fits(self.template.resources):
                index = self.pending.popleft()
                self.attempts[index] += 1
                task_id = f"{self.prefix}-{index}-{self.attempts[index]}"
                args = [a.replace("{i}", str(index)) for a in self.template.args]
                tasks.append(self.template.replace(args=args).spec(task_id))
                self.active[task_id] = index
                free -= self.template.resources
            if tasks:
                driver.accept(ids, tasks, refuse_seconds=1)
            else:
                driver.decline(ids, refuse_seconds=5)
        if not self.pending and not self.suppressed:
            driver.suppress()  # nothing to place: no more offers until a retry
            self.suppressed = True

    def update(self, driver: wasmos.SchedulerDriver, status: wasmos.TaskStatus) -> None:
        index = self.active.get(status.task_id)
        if index is None or not wasmos.is_terminal(status.state):
            return
        del self.active[status.task_id]
        if wasmos.state_name(status.state) != "FINISHED" and self.attempts[index] < self.max_attempts:
            print(f"task {index} {wasmos.state_name(status.state)}: retrying", file=sys.stderr)
            self.pending.append(index)
            driver.revive()
            self.suppressed = False
            return
        self.outcomes[index] = status
        if len(self.outcomes) == len(self.attempts):
            driver.stop()  # done: tear the framework down

    def summary(self) -> str:
        lines, finished = [], 0
        for index in range(len(self.attempts)):
            status = self.outcomes[index]
            state = wasmos.state_name(status.state)
            finished += state == "FINISHED"
            why = f"  {wasmos.reason_name(status.reason)}: {status.message}" if state != "FINISHED" else ""
            host = self.hostnames.get(status.agent_id, status.agent_id)
            n = self.attempts[index]
            lines.append(f"task {index}  {state:<8}  on {host}  {n} attempt{'s' if n > 1 else ''}{why}")
        retries = sum(self.attempts) - len(self.attempts)
        lines.append(
            f"{finished} of {len(self.attempts)} tasks finished, {retries} retries, "
            f"all on agents with {self.key}={self.value}"
        )
        return "\n".join(lines)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", type=Path, help="the .wasm module")
    parser.add_argument("args", nargs="*", help="its arguments; {i} becomes the task's index")
    parser.add_argument("--attr", required=True, help="KEY=VALUE an agent must have")
    parser.add_argument("-n", type=int, default=1, help="how many tasks (default 1)")
    parser.add_argument("--retries", type=int, default=2, help="runs again of a failed task (default 2)")
    parser.add_argument("--cpus", type=float, default=0.1)
    parser.add_argument("--mem", type=int, default=64, help="MiB of linear memory (default 64)")
    options = parser.parse_intermixed_args(argv)
    key, _, value = options.attr.partition("=")
    if not key or options.n < 1 or options.retries < 0:
        parser.error("--attr is KEY=VALUE, -n at least 1, --retries at least 0")

    with wasmos.Cluster() as cluster:
        digest = cluster.upload(options.module.read_bytes())
        template = wasmos.TaskTemplate(digest, cpus=options.cpus, mem=options.mem * wasmos.MiB, args=options.args)
        framework = Pinned(template, options.n, key, value, attempts=options.retries + 1)
        wasmos.SchedulerDriver(framework, wasmos.FrameworkInfo(name="pinned"), cluster).run()
    print(framework.summary())
    return 0 if all(wasmos.state_name(s.state) == "FINISHED" for s in framework.outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
