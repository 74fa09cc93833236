"""Frameworks written on wasmos.Scheduler and wasmos.SchedulerDriver,
against a real TLS master and two agents, only agent-0 with `zone=eu-1`.

Run by scripts/test-python: python -m unittest discover clients/python/tests
"""

import json
import os
import platform
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest
import uuid

import grpc

import wasmos
from wasmos.v1 import common_pb2

from support import GUESTS, ROOT, Master, wait_for

MASTER = None
HELLO = SLEEPER = None
# Generous: a loaded 2-core machine runs these.
WAIT = 60.0


def setUpModule():
    global MASTER, HELLO, SLEEPER
    # Heartbeats every second: a silent stream is found dead in seconds.
    # Agents may be silent for 30 s: a master stopped for that long (by
    # SIGSTOP) does not declare them lost once it runs again.
    MASTER = Master(agents=[{"zone": "eu-1"}, {}],
                    master_args=["--framework-heartbeat", "1s", "--agent-timeout", "30s"])
    with connect() as cluster:
        HELLO = cluster.upload((GUESTS / "hello.wasm").read_bytes())
        SLEEPER = cluster.upload((GUESTS / "sleeper.wasm").read_bytes())


def tearDownModule():
    MASTER.stop()


def connect() -> wasmos.Cluster:
    return wasmos.Cluster(MASTER.url, ca=MASTER.ca, token=MASTER.token)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class DriverTest(unittest.TestCase):
    """Each test gets a connection; drivers it starts are torn down after
    it (a failed test leaves no framework holding offers)."""

    def setUp(self):
        self.cluster = connect()
        self.drivers = []

    def tearDown(self):
        for driver in self.drivers:
            try:
                driver.stop()
                driver.join(30)
            except Exception:
                pass
        self.cluster.close()

    def driver(self, scheduler, name, **kwargs) -> wasmos.SchedulerDriver:
        info = kwargs.pop("info", None) or wasmos.FrameworkInfo(name=name, failover_timeout_ms=60_000)
        driver = wasmos.SchedulerDriver(scheduler, info, self.cluster, **kwargs)
        self.drivers.append(driver)
        return driver

    def wait(self, event: threading.Event, what: str, driver: wasmos.SchedulerDriver, seconds: float = WAIT):
        """Waits for ``event``; a driver that ended first fails the test
        with what ended it."""
        deadline = time.monotonic() + seconds
        while not event.wait(0.2):
            if driver.join(0):
                self.fail(f"the driver stopped before {what}")
            if time.monotonic() > deadline:
                self.fail(f"no {what} within {seconds} s")


class Placer(wasmos.Scheduler):
    """Launches ``specs`` on offers that ``want`` accepts, as many per offer
    as fit; declines the others with ``refuse`` seconds; records every
    update, and sets ``done`` when each task has ended."""

    def __init__(self, template, ids, want=lambda offer: True, refuse=3600.0):
        self.template = template
        self.pending = list(ids)
        self.n = len(self.pending)
        self.want = want
        self.refuse = refuse
        self.declined_agents = set()
        self.updates = []
        self.ended = {}
        self.subscriptions = []
        self.disconnects = []
        self.running = set()
        self.done = threading.Event()

    def subscribed(self, driver, framework_id, resubscribed):
        self.subscriptions.append((framework_id, resubscribed))
        if resubscribed and self.pending:
            driver.revive()

    def disconnected(self, driver, reason):
        self.disconnects.append(reason)

    def offers(self, driver, offers):
        for offer in offers:
            if not self.want(offer):
                self.declined_agents.add(offer.agent_id)
                driver.decline(offer.offer_id, refuse_seconds=self.refuse)
                continue
            free, tasks = wasmos.resources(offer), []
            while self.pending and free.fits(self.template.resources):
                tasks.append(self.template.spec(self.pending.pop(0)))
                free -= self.template.resources
            if tasks:
                driver.accept(offer.offer_id, tasks)
            else:
                driver.decline(offer.offer_id, refuse_seconds=1.0)

    def update(self, driver, status):
        self.updates.append(status)
        if status.state == common_pb2.TASK_STATE_RUNNING:
            self.running.add(status.task_id)
        if wasmos.is_terminal(status.state):
            self.ended[status.task_id] = status
            if len(self.ended) == self.n:
                self.done.set()


class SchedulerDriverTest(DriverTest):
    def test_tasks_land_only_on_the_agent_with_the_attribute(self):
        ids = [unique("pinned") for _ in range(8)]
        # Four fit on the agent at once: the rest wait for its next offers.
        template = wasmos.TaskTemplate(HELLO, cpus=0.5, mem=16 * wasmos.MiB, args=["pinned"])
        framework = Placer(template, ids, want=lambda o: wasmos.has_attribute(o, "zone", "eu-1"))
        driver = self.driver(framework, "pinned")
        driver.start()
        self.wait(framework.done, "end of every task", driver)
        driver.stop()
        self.assertTrue(driver.join(30))

        zoned, other = MASTER.agent_id("agent-0"), MASTER.agent_id("agent-1")
        self.assertEqual(set(framework.ended), set(ids))
        for status in framework.ended.values():
            self.assertEqual(status.state, common_pb2.TASK_STATE_FINISHED, status)
            self.assertEqual(status.agent_id, zoned, f"{status.task_id} ran off the zone")
        self.assertEqual(framework.declined_agents, {other}, "the other agent was offered and declined")
        # Every update that asked for an acknowledgement got one, in batches.
        acked = {(s.task_id, s.uuid) for s in framework.updates if s.uuid}
        self.assertEqual(driver.stats.acknowledged, len(acked))
        self.assertGreaterEqual(driver.stats.acknowledge_calls, 1)

    def test_a_declined_agent_is_not_offered_again_within_the_filter(self):
        refuse = 7.0  # longer than the master's default of 5 s, so a dropped filter shows
        target = MASTER.agent_id("agent-1")
        seen = queue.Queue()

        class Decliner(wasmos.Scheduler):
            declined_at = None

            def offers(self, driver, offers):
                for offer in offers:
                    now = time.monotonic()
                    seen.put((now, offer.agent_id))
                    if offer.agent_id == target and self.declined_at is None:
                        # Taken before the call: the master starts the
                        # filter after this instant.
                        self.declined_at = now
                        driver.decline(offer.offer_id, refuse_seconds=refuse)
                    elif offer.agent_id == target:
                        driver.decline(offer.offer_id, refuse_seconds=3600)
                    else:
                        driver.decline(offer.offer_id, refuse_seconds=0.5)

        framework = Decliner()
        driver = self.driver(framework, "decliner")
        driver.start()
        offers_of_target, others_within = [], 0
        deadline = time.monotonic() + refuse + WAIT
        while len(offers_of_target) < 2 and time.monotonic() < deadline:
            try:
                at, agent = seen.get(timeout=0.5)
            except queue.Empty:
                continue
            if agent == target:
                offers_of_target.append(at)
            elif framework.declined_at is not None and at < framework.declined_at + refuse:
                others_within += 1
        driver.stop()
        driver.join(30)
        self.assertEqual(len(offers_of_target), 2, "the declined agent was offered again after its filter")
        self.assertGreaterEqual(offers_of_target[1] - framework.declined_at, refuse,
                                "the declined agent came back within its filter")
        # Offers kept flowing meanwhile: the filter held back one agent only.
        self.assertGreaterEqual(others_within, 1)

    def test_offers_are_sized_by_the_declared_demand(self):
        held = queue.Queue()

        class Holder(wasmos.Scheduler):
            def offers(self, driver, offers):
                for offer in offers:
                    held.put(wasmos.resources(offer))

        def cpus_held(expected: float) -> float:
            total, deadline = 0.0, time.monotonic() + WAIT
            while round(total * 1000) < round(expected * 1000) and time.monotonic() < deadline:
                try:
                    total += held.get(timeout=0.5).cpus
                except queue.Empty:
                    continue
            time.sleep(1.0)  # nothing more may come
            while not held.empty():
                total += held.get().cpus
            return total

        task = wasmos.Resources(cpus=0.5, mem=64 * wasmos.MiB)
        info = wasmos.FrameworkInfo(name="sized", failover_timeout_ms=60_000,
                                    demand=wasmos.Demand(task=task.to_proto(), tasks=3))
        driver = self.driver(Holder(), "sized", info=info)
        driver.start()
        # Two agents of 2 cpus are free, but three tasks of 0.5 are wanted.
        self.assertAlmostEqual(cpus_held(1.5), 1.5)
        driver.set_demand(wasmos.Demand(task=task.to_proto(), tasks=5))
        self.assertAlmostEqual(cpus_held(1.0), 1.0, msg="two more tasks' worth")
        with self.assertRaises(wasmos.WasmosError) as refused:
            driver.set_demand(wasmos.Demand(task=wasmos.Resources(cpus=0, mem=1).to_proto(), tasks=1))
        self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_a_killed_tasks_update_arrives(self):
        task_id = unique("killed")
        template = wasmos.TaskTemplate(SLEEPER, cpus=0.1, mem=16 * wasmos.MiB, args=["120000"])
        framework = Placer(template, [task_id])
        driver = self.driver(framework, "killer")
        driver.start()
        wait_for(lambda: task_id in framework.running, "RUNNING update", WAIT)
        with self.assertRaises(wasmos.WasmosError) as unknown:
            driver.kill(["no-such-task"])
        self.assertEqual(unknown.exception.code, grpc.StatusCode.NOT_FOUND)
        driver.kill(task_id)
        self.wait(framework.done, "KILLED update", driver)
        status = framework.ended[task_id]
        self.assertEqual(status.state, common_pb2.TASK_STATE_KILLED, status)
        self.assertEqual(status.reason, common_pb2.REASON_KILLED, status)

    def test_the_driver_carries_on_through_a_master_restart(self):
        ids = [unique("restart") for _ in range(16)]
        # 16 x 0.25 cpus: both agents full, every task running at once.
        template = wasmos.TaskTemplate(SLEEPER, cpus=0.25, mem=16 * wasmos.MiB, args=["4000"])
        framework = Placer(template, ids)
        driver = self.driver(framework, "restart", min_heartbeat_timeout=10)
        framework_id = driver.start()
        wait_for(lambda: len(framework.running) == len(ids) or framework.done.is_set(), "all tasks running", WAIT)
        self.assertFalse(framework.done.is_set(), "the tasks were still running at the restart")
        MASTER.restart_master()
        self.wait(framework.done, "end of every task", driver, seconds=120)

        self.assertEqual(set(framework.ended), set(ids))
        for status in framework.ended.values():
            self.assertEqual(status.state, common_pb2.TASK_STATE_FINISHED, status)
        self.assertEqual(driver.framework_id, framework_id)
        self.assertGreaterEqual(len(framework.disconnects), 1, "the driver saw its stream break")
        self.assertEqual(framework.subscriptions[0], (framework_id, False))
        self.assertIn((framework_id, True), framework.subscriptions[1:])
        self.assertGreaterEqual(driver.stats.resubscriptions, 1)
        driver.stop()
        self.assertTrue(driver.join(30))

    def test_the_driver_refuses_a_master_of_an_older_epoch(self):
        class Quiet(Placer):
            def subscribed(self, driver, framework_id, resubscribed):
                driver.suppress()
                super().subscribed(driver, framework_id, resubscribed)

        framework = Quiet(None, [])
        driver = self.driver(framework, "epochs")
        driver.start()
        at_first = MASTER.work / "epoch-first.redb"

        def restarted(within, **registry):
            before = len(framework.subscriptions)
            MASTER.restart_master(**registry)
            try:
                wait_for(lambda: len(framework.subscriptions) > before or None, "re-subscription", within)
                return True
            except AssertionError:
                return False

        self.assertTrue(restarted(WAIT, keep=at_first))  # one epoch newer
        self.assertTrue(restarted(WAIT))  # two newer
        # The registry as it was first: a master one epoch older than the
        # newest the driver saw, as a deposed leader would be.
        self.assertFalse(restarted(3, registry=at_first), "the driver took a master of an older epoch")
        self.assertTrue(restarted(WAIT))  # as new as the newest seen
        driver.stop()
        self.assertTrue(driver.join(30))

    def test_a_silent_stream_is_found_dead_by_its_missing_heartbeats(self):
        class Quiet(Placer):
            """Asks for no offers: no call of its is in flight when the
            master stops."""

            def subscribed(self, driver, framework_id, resubscribed):
                driver.suppress()
                super().subscribed(driver, framework_id, resubscribed)

        framework = Quiet(None, [])
        driver = self.driver(framework, "silent", min_heartbeat_timeout=2)
        framework_id = driver.start()
        wait_for(lambda: framework.subscriptions, "subscription", WAIT)
        # A stopped master keeps its connections open and sends nothing:
        # only the heartbeats' absence tells.
        os.kill(MASTER.master.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: framework.disconnects, "disconnection", WAIT)
        finally:
            os.kill(MASTER.master.pid, signal.SIGCONT)
        self.assertIn("no event from the master for", framework.disconnects[0])
        wait_for(lambda: (framework_id, True) in framework.subscriptions, "re-subscription", WAIT)
        self.assertEqual(driver.framework_id, framework_id)
        driver.stop()
        self.assertTrue(driver.join(30))
        self.assertEqual(len(MASTER.connected_agents()), 2)

    def test_a_framework_stopped_for_failover_is_resumed_by_a_new_process(self):
        task_id = unique("failover")
        template = wasmos.TaskTemplate(SLEEPER, cpus=0.1, mem=16 * wasmos.MiB, args=["6000", "resumed"])
        framework = Placer(template, [task_id])
        driver = self.driver(framework, "failover")
        framework_id = driver.start()
        wait_for(lambda: task_id in framework.running, "RUNNING update", WAIT)
        driver.stop(failover=True)
        self.assertTrue(driver.join(30))
        self.assertNotIn(task_id, framework.ended, "the task outlived the first driver")

        resumed = self.resume(framework_id, task_id)
        self.assertEqual(resumed[0], {"subscribed": framework_id, "resubscribed": False})
        updates = [line for line in resumed[1:] if line.get("task_id") == task_id]
        self.assertTrue(updates, resumed)
        self.assertEqual(updates[-1]["state"], "FINISHED", resumed)
        self.assertEqual(updates[-1]["stdout"], "slept 6000 resumed\n")

    def resume(self, framework_id, task_id):
        """Runs a new Python process that resumes the framework, waits for
        the task's end, tears the framework down and prints what it saw,
        one JSON object a line."""
        script = textwrap.dedent("""
            import json, sys
            import wasmos

            url, ca_file, token, framework_id, task_id = sys.argv[1:]
            cluster = wasmos.Cluster(url, ca=open(ca_file).read(), token=token)

            class Resumed(wasmos.Scheduler):
                def subscribed(self, driver, fid, resubscribed):
                    print(json.dumps({"subscribed": fid, "resubscribed": resubscribed}), flush=True)
                    driver.reconcile()  # every task of the framework

                def update(self, driver, status):
                    line = {"task_id": status.task_id, "state": wasmos.state_name(status.state)}
                    if status.task_id == task_id and wasmos.is_terminal(status.state):
                        line["stdout"] = cluster.read_stdout(task_id, status.agent_id).decode()
                        driver.stop()
                    print(json.dumps(line), flush=True)

            info = wasmos.FrameworkInfo(framework_id=framework_id, name="failover")
            wasmos.SchedulerDriver(Resumed(), info, cluster).run()
        """)
        done = subprocess.run(
            [sys.executable, "-c", script, MASTER.url, str(MASTER.ca_file), MASTER.token, framework_id, task_id],
            capture_output=True, text=True, timeout=WAIT + 30,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return [json.loads(line) for line in done.stdout.splitlines()]

    def test_an_update_not_acknowledged_comes_again(self):
        task_id = unique("unacked")
        template = wasmos.TaskTemplate(HELLO, cpus=0.1, mem=16 * wasmos.MiB)
        first = Placer(template, [task_id])
        driver = self.driver(first, "unacked", auto_acknowledge=False)
        framework_id = driver.start()
        self.wait(first.done, "end of the task", driver)
        driver.stop(failover=True)
        self.assertTrue(driver.join(30))
        finished = first.ended[task_id]
        self.assertTrue(finished.uuid)
        self.assertEqual(driver.stats.acknowledged, 0)

        # A new driver of the framework is sent it again, and acknowledges it.
        info = wasmos.FrameworkInfo(framework_id=framework_id, name="unacked", failover_timeout_ms=60_000)
        again = Placer(template, [])
        again.n = 1
        resumed = self.driver(again, "unacked", info=info, auto_acknowledge=False)
        resumed.start()
        self.wait(again.done, "the update again", resumed)
        self.assertEqual(again.ended[task_id].uuid, finished.uuid)
        self.assertEqual(again.ended[task_id].state, common_pb2.TASK_STATE_FINISHED)
        resumed.acknowledge(again.ended.values())
        self.assertEqual(resumed.stats.acknowledged, 0, "nothing acknowledged by itself")

    def test_a_torn_down_framework_cannot_be_resumed(self):
        driver = self.driver(wasmos.Scheduler(), "torn")
        framework_id = driver.start()
        driver.stop()  # failover=False: teardown
        self.assertTrue(driver.join(30))
        info = wasmos.FrameworkInfo(framework_id=framework_id, name="torn")
        again = self.driver(wasmos.Scheduler(), "torn", info=info)
        with self.assertRaises(wasmos.WasmosError) as refused:
            again.start()
        self.assertEqual(refused.exception.code, grpc.StatusCode.NOT_FOUND, refused.exception)

    def test_a_callback_that_raises_stops_the_driver_and_join_raises_it(self):
        class Broken(wasmos.Scheduler):
            def offers(self, driver, offers):
                raise RuntimeError("no placement policy")

        driver = self.driver(Broken(), "broken")
        framework_id = driver.start()
        with self.assertRaisesRegex(RuntimeError, "no placement policy"):
            driver.join(WAIT)
        # Ended as by a crash: the framework is there until stop() ends it.
        driver.stop()
        info = wasmos.FrameworkInfo(framework_id=framework_id, name="broken")
        with self.assertRaises(wasmos.WasmosError) as refused:
            self.driver(wasmos.Scheduler(), "broken", info=info).start()
        self.assertEqual(refused.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_a_refused_subscription_raises_from_start(self):
        with wasmos.Cluster(MASTER.url, ca=MASTER.ca, token="nobody.secret") as stranger:
            driver = wasmos.SchedulerDriver(wasmos.Scheduler(), wasmos.FrameworkInfo(name="x"), stranger)
            with self.assertRaises(wasmos.WasmosError) as refused:
                driver.start()
        self.assertEqual(refused.exception.code, grpc.StatusCode.UNAUTHENTICATED)


class OnTest(unittest.TestCase):
    """Jobs that ask for an agent's attributes, its own (`os`, `arch`) and
    an operator's (`zone`), run by the client and by the master."""

    def test_jobs_run_only_on_agents_with_the_attributes_asked_for(self):
        os_name = {"linux": "linux", "darwin": "macos", "win32": "windows"}[sys.platform]
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(),
                                                          platform.machine().lower())
        for agent in MASTER.agents():
            self.assertIn(f"os={os_name}", agent["attributes"], agent)
            self.assertIn(f"arch={arch}", agent["attributes"], agent)
        zoned = MASTER.agent_id("agent-0")
        on = {"zone": "eu-1", "arch": arch}
        with connect() as cluster:
            ran = cluster.run(GUESTS / "hello.wasm", n=6, cpus=0.5, on=on, read_stdout=False)
            job = cluster.submit(GUESTS / "hello.wasm", n=6, cpus=0.5, on=on)
            cluster.wait(job, timeout=WAIT)
            submitted = cluster.results(job)
            with self.assertRaises(wasmos.WasmosError) as refused:
                cluster.submit(GUESTS / "hello.wasm", on={f"k{i}": "v" for i in range(17)})
        self.assertIn("on has 17 items", str(refused.exception))
        self.assertEqual(len(ran) + len(submitted), 12)
        for result in ran + submitted:
            self.assertEqual((result.state, result.agent_id), ("FINISHED", zoned), result)


class ExampleTest(unittest.TestCase):
    def test_the_pinned_example_retries_and_keeps_to_its_zone(self):
        env = dict(MASTER.env, WASMOS_MASTER=MASTER.url)
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples/python/pinned.py"), str(GUESTS / "exitcode.wasm"),
             "--attr", "zone=eu-1", "-n", "3", "--retries", "1", "--", "{i}"],
            env=env, capture_output=True, text=True, timeout=WAIT + 30,
        )
        self.assertEqual(done.returncode, 1, done.stderr)  # tasks 1 and 2 exit non-zero
        lines = done.stdout.splitlines()
        self.assertEqual(len(lines), 4, done.stdout)
        self.assertRegex(lines[0], r"^task 0  FINISHED  on agent-0  1 attempt$")
        self.assertRegex(lines[1], r"^task 1  FAILED    on agent-0  2 attempts  EXIT_NONZERO: ")
        self.assertRegex(lines[2], r"^task 2  FAILED    on agent-0  2 attempts  EXIT_NONZERO: ")
        self.assertEqual(lines[3], "1 of 3 tasks finished, 2 retries, all on agents with zone=eu-1")
        self.assertEqual(done.stderr.count("retrying"), 2, done.stderr)


    def test_the_readmes_framework_runs(self):
        readme = (ROOT / "clients/python/README.md").read_text()
        code = readme.split("```python\n")[2].split("```")[0]
        self.assertIn("class Pinned(wasmos.Scheduler)", code)
        env = dict(MASTER.env, WASMOS_MASTER=MASTER.url)
        done = subprocess.run([sys.executable, "-c", code], cwd=GUESTS, env=env,
                              capture_output=True, text=True, timeout=WAIT + 30)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout, str([(i, "FINISHED") for i in range(10)]) + "\n")


class BadInputTest(unittest.TestCase):
    """Mistakes a framework makes are named before anything is sent."""

    DIGEST = "ab" * 32

    def test_a_driver_needs_a_scheduler_and_a_named_framework(self):
        with connect() as cluster:
            with self.assertRaisesRegex(ValueError, "needs a name"):
                wasmos.SchedulerDriver(wasmos.Scheduler(), wasmos.FrameworkInfo(), cluster)
            with self.assertRaisesRegex(TypeError, "wasmos.Scheduler"):
                wasmos.SchedulerDriver(object(), wasmos.FrameworkInfo(name="x"), cluster)
            with self.assertRaisesRegex(TypeError, "wasmos.Cluster"):
                wasmos.SchedulerDriver(wasmos.Scheduler(), wasmos.FrameworkInfo(name="x"), MASTER.url)
            with self.assertRaisesRegex(TypeError, "FrameworkInfo"):
                wasmos.SchedulerDriver(wasmos.Scheduler(), {"name": "x"}, cluster)
            driver = wasmos.SchedulerDriver(wasmos.Scheduler(), wasmos.FrameworkInfo(name="x"), cluster)
            with self.assertRaisesRegex(wasmos.WasmosError, "not subscribed yet"):
                driver.decline(["o-1"])
            with self.assertRaisesRegex(wasmos.WasmosError, "never started"):
                driver.join(0)

    def test_task_templates_name_the_bad_field(self):
        cases = {
            "module": dict(module="primes.wasm"),
            "cpus": dict(cpus=0),
            "mem": dict(mem=0),
            "disk": dict(disk=-1),
            "timeout": dict(timeout=0),
            "args": dict(args="--flag"),
            "variable.s name": dict(env={"A=B": "c"}),
            "path": dict(inputs={"../etc/passwd": DIGEST}),
            "input 'data.txt'": dict(inputs={"data.txt": "nope"}),
        }
        for field, change in cases.items():
            with self.subTest(field=field), self.assertRaisesRegex(ValueError, field):
                wasmos.TaskTemplate(**{"module": self.DIGEST, **change})
        with self.assertRaisesRegex(ValueError, "task id"):
            wasmos.TaskTemplate(self.DIGEST).spec("has space")

    def test_a_template_makes_the_spec_it_describes(self):
        spec = wasmos.task_spec(
            "t-1", self.DIGEST, cpus=0.25, mem=8 * wasmos.MiB, disk=wasmos.MiB, args=["a", "b"],
            env={"K": "v"}, inputs={"in/data.txt": self.DIGEST}, input_dirs={"tree": self.DIGEST},
            max_fuel=1000, timeout=1.5, labels={"team": "x"},
        )
        self.assertEqual((spec.task_id, spec.artifact, list(spec.args)), ("t-1", self.DIGEST, ["a", "b"]))
        self.assertEqual((spec.resources.cpus, spec.resources.mem, spec.resources.disk), (0.25, 8 << 20, 1 << 20))
        self.assertEqual([(e.name, e.value) for e in spec.env], [("K", "v")])
        self.assertEqual([(i.path, i.kind) for i in spec.inputs],
                         [("in/data.txt", common_pb2.INPUT_KIND_FILE), ("tree", common_pb2.INPUT_KIND_TAR_DIRECTORY)])
        self.assertEqual((spec.max_fuel, spec.timeout_ms, dict(spec.labels)), (1000, 1500, {"team": "x"}))

    def test_offers_are_read_in_thousandths_of_a_core(self):
        offer = wasmos.Offer(
            offer_id="o", agent_id="a",
            attributes=[common_pb2.Attribute(key="zone", value="eu-1"), common_pb2.Attribute(key="gpu")],
            resources=common_pb2.Resources(cpus=1.0, mem=100, disk=0),
        )
        self.assertEqual(wasmos.attributes(offer), {"zone": "eu-1", "gpu": ""})
        self.assertTrue(wasmos.has_attribute(offer, "gpu"))
        self.assertFalse(wasmos.has_attribute(offer, "zone", "us-1"))
        free, need = wasmos.resources(offer), wasmos.Resources(0.1, 10)
        for _ in range(10):
            self.assertTrue(free.fits(need), free)
            free -= need
        self.assertEqual(free, wasmos.Resources(0.0, 0))
        with self.assertRaisesRegex(ValueError, "does not fit"):
            free - need


DIGEST = BadInputTest.DIGEST

if __name__ == "__main__":
    unittest.main()
