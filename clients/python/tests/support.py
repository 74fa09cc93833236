"""Real processes for the tests: a TLS master and agents that joined it
(the `wasmos` binary at $WASMOS_BIN), each in a temporary directory.

Not a test module (no `test_` prefix): the test modules import it.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[3]
GUESTS = ROOT / "examples/guests/target/wasm32-wasip1/release"
BIN = os.environ.get("WASMOS_BIN", str(ROOT / "target/release/wasmos"))


class Master:
    """A master and agents that joined it, in a temporary directory.

    ``agents`` lists each agent's attributes (``--attr k=v``); by default
    one agent without any. Each agent offers 2 cpus, 2 GiB of memory and
    of disk.
    """

    def __init__(self, agents: Optional[List[Dict[str, str]]] = None, master_args: List[str] = ()):
        self.dir = tempfile.TemporaryDirectory()
        self.processes = []
        self.logs = []
        self.agent_dirs = []
        self.work = Path(self.dir.name)
        self.master_args = list(master_args)
        self.master = None
        try:
            self._start(agents if agents is not None else [{}])
        except BaseException:
            self.stop()
            raise

    def _start(self, agents):
        work = self.work
        self.master = self._start_master("127.0.0.1:0")
        self.url = self._url()
        self.ca_file = work / "master/ca.pem"
        self.ca = self.ca_file.read_text()
        self.token = (work / "master/admin.token").read_text().strip()
        self.env = dict(os.environ, WASMOS_CA=str(self.ca_file), WASMOS_TOKEN=self.token,
                        WASMOS_PROFILE=str(work / "no-profile.json"))
        for i, attrs in enumerate(agents):
            join = subprocess.run(
                [BIN, "token", "create", "--agent", "--master", self.url],
                env=self.env, check=True, capture_output=True, text=True,
            ).stdout.strip()
            agent_dir = work / f"agent-{i}"
            self.agent_dirs.append(agent_dir)
            flags = [f"--attr={k}={v}" for k, v in attrs.items()]
            self.processes.append(
                subprocess.Popen(
                    [BIN, "agent", "--join", join, "--work-dir", str(agent_dir), "--cpus", "2",
                     "--mem", "2GiB", "--disk", "2GiB", "--hostname", f"agent-{i}", *flags],
                    stdout=self._log(work / f"agent-{i}.log"), stderr=subprocess.STDOUT,
                )
            )
        count = len(self.agent_dirs)
        wait_for(lambda: len(self.connected_agents()) == count or None, f"{count} agents to connect")

    @property
    def agent_dir(self) -> Path:
        return self.agent_dirs[0]

    def agents(self) -> List[dict]:
        """The master's view of its agents (`wasmos agents --json`: one
        object a line, with `id`, `hostname`, `state`, `attributes`)."""
        out = subprocess.run([BIN, "agents", "--json", "--master", self.url],
                             env=self.env, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def connected_agents(self) -> List[dict]:
        return [a for a in self.agents() if a.get("state") == "connected"]

    def agent_id(self, hostname: str) -> str:
        """The id of the agent started as `agent-<i>`."""
        return next(a["id"] for a in self.agents() if a["hostname"] == hostname)

    def _start_master(self, listen):
        log = self.work / "master.log"
        log.unlink(missing_ok=True)
        return subprocess.Popen(
            [BIN, "master", "--listen", listen, "--http", "127.0.0.1:0",
             "--work-dir", str(self.work / "master"), *self.master_args],
            stdout=self._log(log), stderr=subprocess.STDOUT,
        )

    def _url(self):
        log = self.work / "master.log"
        return wait_for(lambda: next(
            (w for line in log.read_text().splitlines() if "listening on" in line
             for w in line.split() if w.startswith("https://")), None), "the master's URL")

    def restart_master(self, registry: Optional[Path] = None, keep: Optional[Path] = None):
        """`kill -9` of the master, and a new one on its port and files:
        first copying its registry to `keep`, then `registry` over it."""
        self.master.kill()
        self.master.wait()
        current = self.work / "master/registry.redb"
        if keep is not None:
            shutil.copyfile(current, keep)
        if registry is not None:
            shutil.copyfile(registry, current)
        self.master = self._start_master(self.url.removeprefix("https://"))
        assert self._url() == self.url

    def _log(self, path):
        file = path.open("w")
        self.logs.append(file)
        return file

    def stop(self):
        for process in [p for p in [self.master, *reversed(self.processes)] if p is not None]:
            process.kill()
            process.wait()
        for file in self.logs:
            file.close()
        for agent_dir in self.agent_dirs:
            pid = agent_dir / "executor.pid"
            if pid.exists():
                try:
                    os.kill(int(pid.read_text().strip()), 9)
                except (ProcessLookupError, ValueError):
                    pass
        self.dir.cleanup()


def wait_for(probe, what, seconds=60.0):
    """The first truthy value of ``probe()``, polled for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {seconds} s")
