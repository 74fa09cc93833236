"""The Python client against a real TLS master and agent (the `wasmos`
binary at $WASMOS_BIN, guests built by scripts/test).

Run by scripts/test-python: python -m unittest discover clients/python/tests
"""

import json
import os
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

import grpc

import wasmos

from support import GUESTS, ROOT, Master


MASTER = None


def setUpModule():
    global MASTER
    MASTER = Master()


def tearDownModule():
    MASTER.stop()


class ClusterTest(unittest.TestCase):
    def cluster(self, **kwargs):
        return wasmos.Cluster(MASTER.url, ca=MASTER.ca, token=MASTER.token, **kwargs)

    def test_a_job_whose_every_answer_is_checked(self):
        with self.cluster() as cluster:
            results = cluster.run(GUESTS / "hello.wasm", n=30, cpus=0.1, args=["task-{i}"],
                                  env={"INDEX": "{i}"})
        self.assertEqual(len(results), 30)
        for i, result in enumerate(results):
            self.assertEqual(result.index, i)
            self.assertTrue(result.ok, result)
            self.assertEqual(result.exit_code, 0)
            stdout = result.stdout.decode()
            self.assertIn(f"argv[1]=task-{i}\n", stdout)
            self.assertIn(f"env INDEX={i}\n", stdout)

    def test_a_submitted_job_runs_in_the_master(self):
        with self.cluster() as cluster:
            job = cluster.submit(GUESTS / "hello.wasm", n=12, cpus=0.1, args=["part-{i}"],
                                 env={"INDEX": "{i}"}, name="py-submit")
            self.assertTrue(job.startswith("j"), job)
        # Another connection, as another process would: the job went on.
        with self.cluster() as cluster:
            summary = cluster.wait(job, timeout=120)
            self.assertEqual(wasmos.v1.jobs_pb2.JobState.Name(summary.state), "JOB_STATE_SUCCEEDED")
            results = cluster.results(job, read_stdout=True)
            self.assertEqual(len(results), 12)
            for i, result in enumerate(results):
                self.assertEqual((result.index, result.state, result.exit_code), (i, "FINISHED", 0))
                stdout = result.stdout.decode()
                self.assertIn(f"argv[1]=part-{i}\n", stdout)
                self.assertIn(f"env INDEX={i}\n", stdout)
                self.assertIn("env WASMOS_ATTEMPT=1\n", stdout)
            self.assertIn(job, [j.job_id for j in cluster.jobs()])

    def test_a_submitted_job_retries_by_exit_code(self):
        with self.cluster() as cluster:
            job = cluster.submit(GUESTS / "flaky.wasm", n=3, args=["75", "2"],
                                 retry={"max_attempts": 3, "exit_codes": [75]})
            cluster.wait(job, timeout=120)
            self.assertEqual([r.task_id.rsplit("-", 1)[1] for r in cluster.results(job)], ["2"] * 3)
            held = cluster.submit(GUESTS / "hello.wasm", n=2, hold=True)
            cancelled = cluster.cancel_job(held)
            self.assertEqual(wasmos.v1.jobs_pb2.JobState.Name(cancelled.state), "JOB_STATE_CANCELLED")
            with self.assertRaises(wasmos.WasmosError) as refused:
                cluster.submit(GUESTS / "hello.wasm", n=0)
            self.assertIn("1 to 1000000", str(refused.exception))

    def test_a_failed_task_says_why(self):
        with self.cluster() as cluster:
            [trap] = cluster.run(GUESTS / "trap.wasm")
            [hog] = cluster.run(GUESTS / "memhog.wasm", mem=2 << 20, args=["64"])
            [spin] = cluster.run(GUESTS / "primes.wasm", max_fuel=1000, args=["100000000"])
        self.assertEqual((trap.state, trap.reason), ("FAILED", "TRAP"), trap)
        self.assertIn("unreachable", trap.message)
        self.assertEqual((hog.state, hog.reason), ("FAILED", "MEMORY_LIMIT"), hog)
        self.assertEqual((spin.state, spin.reason), ("FAILED", "OUT_OF_FUEL"), spin)

    def test_a_refused_call_carries_the_masters_words(self):
        with self.cluster() as cluster:
            with self.assertRaises(wasmos.WasmosError) as refused:
                cluster.run(GUESTS / "hello.wasm", mem=0)
        self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("mem must be more than 0 bytes", str(refused.exception))
        with wasmos.Cluster(MASTER.url, ca=MASTER.ca, token="nobody.secret") as stranger:
            with self.assertRaises(wasmos.WasmosError) as unknown:
                stranger.run(GUESTS / "hello.wasm")
        self.assertEqual(unknown.exception.code, grpc.StatusCode.UNAUTHENTICATED)

    def test_a_job_outlives_a_master_restart(self):
        results = []
        with self.cluster() as cluster:
            job = threading.Thread(target=lambda: results.extend(cluster.run(
                GUESTS / "sleeper.wasm", n=40, cpus=0.1, args=["500", "{i}"], deadline=120)))
            job.start()
            time.sleep(0.7)
            self.assertTrue(job.is_alive(), "the job runs while the master restarts")
            MASTER.restart_master()
            job.join(150)
        self.assertEqual(len(results), 40, "the job ended")
        for i, result in enumerate(results):
            self.assertTrue(result.ok, result)
            self.assertEqual(result.stdout, f"slept 500 {i}\n".encode())

    def test_the_clis_profile_is_enough(self):
        with tempfile.TemporaryDirectory() as home:
            profile = Path(home) / "profile.json"
            profile.write_text(json.dumps({"master": MASTER.url, "ca": MASTER.ca, "token": MASTER.token}))
            saved = {k: os.environ.pop(k, None) for k in ("WASMOS_MASTER", "WASMOS_CA", "WASMOS_TOKEN")}
            os.environ["WASMOS_PROFILE"] = str(profile)
            try:
                with wasmos.Cluster() as cluster:
                    [result] = cluster.run(GUESTS / "hello.wasm", args=["from-profile"])
            finally:
                del os.environ["WASMOS_PROFILE"]
                os.environ.update({k: v for k, v in saved.items() if v is not None})
        self.assertIn(b"argv[1]=from-profile\n", result.stdout)


class ReflectionTest(unittest.TestCase):
    def test_pythons_own_reflection_client_lists_the_services(self):
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        credentials = grpc.ssl_channel_credentials(MASTER.ca.encode())
        with grpc.secure_channel(MASTER.url.removeprefix("https://"), credentials) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            scheduler = database.FindFileContainingSymbol("wasmos.v1.Scheduler")
        self.assertLessEqual(
            {"wasmos.v1.Scheduler", "wasmos.v1.Operator", "wasmos.v1.Artifacts"}, services
        )
        self.assertEqual(scheduler.package, "wasmos.v1")


class StubsTest(unittest.TestCase):
    def test_the_installed_stubs_are_what_proto_makes_today(self):
        sys.path.insert(0, str(ROOT / "clients/python"))
        from build_stubs import generate

        installed = Path(wasmos.__file__).parent / "v1"
        with tempfile.TemporaryDirectory() as out:
            fresh = generate(Path(out))
            self.assertTrue(fresh)
            for path in fresh:
                mine = installed / path.name
                self.assertTrue(mine.exists(), f"{path.name} is not installed")
                self.assertEqual(mine.read_text(), path.read_text(),
                                 f"{path.name} differs from proto/: reinstall the client")


if __name__ == "__main__":
    unittest.main()
