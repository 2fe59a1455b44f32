"""A real Prometheus and a `toolkit export` for tests: each started on loopback with a
temporary config and storage directory, every wait bounded, both killed by their owner
(tests/test_export.py natively, tests/kernel/test_export_lab.py in the lab)."""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import bounded
import pytest

from toolkit import lab

from toolkit.bench import workload

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
# under TCG in the lab everything starts slower (a BCC compile: tens of seconds)
SLOW = 8 if lab.in_lab() else 1


def need_tool(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: apt-get install prometheus (bin/setup installs it)"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, fn, timeout: float, every: float = 0.2):
    end = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Exporter:
    """`toolkit export ... --listen 127.0.0.1:0`: the port from its `serving` line."""

    def __init__(self, tmp: Path, *args: str):
        self.err_path = tmp / f"export-{time.monotonic_ns()}.err"
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([TOOLKIT, "export", "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        m = wait_for("the exporter's serving line", self._serving, 30 * SLOW)
        self.port = int(m.group(1))

    def _serving(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"export exited {self.proc.returncode}: {self.stderr()}")
        return re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", self.stderr())

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self, timeout: float = 30 * SLOW) -> dict:
        """SIGTERM; the exit status must be 0; the final counters it printed."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        assert rc == 0, self.stderr()
        line = [x for x in self.stderr().splitlines() if x.startswith('{"final_stats"')]
        assert line, self.stderr()
        return json.loads(line[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.err.close()


class Prometheus:
    """A real Prometheus on loopback scraping one target every second."""

    def __init__(self, tmp: Path, target_port: int):
        binary = need_tool("prometheus")
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                       "scrape_configs:\n  - job_name: toolkit\n"
                       f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        self.log = open(tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("prometheus /-/ready", self._ready, 60 * SLOW)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> float | None:
        """The instant query's one value (None: no series), via the HTTP API."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        res = body["data"]["result"]
        assert len(res) <= 1, f"{expr}: {res}"
        return float(res[0]["value"][1]) if res else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def stack(tmp_path):
    """Start an exporter then Prometheus on it: stack(*export_args) -> (exp, prom)."""
    started = []

    def start(*args):
        exp = Exporter(tmp_path, *args)
        started.append(exp)
        prom = Prometheus(tmp_path, exp.port)
        started.append(prom)
        wait_for("the first scrape", lambda: prom.query('up{job="toolkit"}') == 1, 30 * SLOW)
        return exp, prom
    yield start
    for thing in reversed(started):
        thing.stop() if isinstance(thing, Prometheus) else thing.kill()


class Storm:
    """forkstorm held at --wait-start: its pid first, children only after go()."""

    def __init__(self, tmp: Path, count: int, rate: float = 0.0):
        bins = workload.build()
        params = workload.StormParams(count=count, rate=rate)
        self.proc = subprocess.Popen(params.argv(bins, tmp / "ledger.csv") + ["--wait-start"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ready = bounded.readline(self.proc.stdout, 60, "forkstorm's ready line").split()
        assert ready[:1] == ["ready"], self.proc.stderr.read()
        self.pid = int(ready[1])

    def go(self, timeout: float = 120) -> dict:
        out, err = self.proc.communicate("go\n", timeout=timeout)
        assert self.proc.returncode == 0, err
        return workload.parse_summary(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def storm(tmp_path):
    made = []

    def make(count, rate=0.0):
        s = Storm(tmp_path, count, rate)
        made.append(s)
        return s
    yield make
    for s in made:
        s.kill()


def settled(prom: Prometheus, expr: str, scrapes: int = 3, timeout: float = 30 * SLOW,
            at_least: float | None = None) -> float:
    """The query's value once it stayed the same over `scrapes` scrapes (1 s apart) and,
    with `at_least`, reached it (a reader the host's load slowed down is waited for; a
    value that never gets there is still returned at `timeout`, for the test to judge)."""
    seen: list = []

    def stable():
        seen.append(prom.query(expr))
        return (len(seen) >= scrapes and len(set(seen[-scrapes:])) == 1
                and seen[-1] is not None and (at_least is None or seen[-1] >= at_least))
    try:
        wait_for(f"{expr} to settle", stable, timeout, every=1.0)
    except AssertionError:
        if at_least is None or seen[-1] is None:
            raise
    return seen[-1]
