"""The peers (auditd, bpftrace, forkstat, BCC's execsnoop/exitsnoop) as collectors.

Parsing: captured output of each tool (tests/data/peers/README.md). For real (root,
natively: this kernel runs auditd, bpftrace and forkstat): each peer attached while
this process forks, execs and exits children; cleanup after a stop and after a SIGKILL
of the process that ran them.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.backends.base import UNTYPED, get_backend, provided_fields
from toolkit.backends.peers import auditd as A
from toolkit.backends.peers import bccsnoop as C
from toolkit.backends.peers import bpftrace as B
from toolkit.backends.peers import forkstat as F
from toolkit.cli import main

import bounded  # noqa: I001  (tests/bounded.py)

DATA = Path(__file__).parent / "data" / "peers"
ROOT = os.geteuid() == 0
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NATIVE = ("auditd", "bpftrace", "forkstat")
TOOLS = {"auditd": "auditctl", "bpftrace": "bpftrace", "forkstat": "forkstat"}


def lines(name):
    # split on newlines only: auditd's ENRICHED format separates fields with 0x1d,
    # which str.splitlines() would take for a line break
    return (DATA / name).read_text().rstrip("\n").split("\n")


def parse_all(parse, name):
    out = []
    for ln in lines(name):
        recs = parse(ln)
        assert recs is not None, f"unreadable line: {ln!r}"
        out += recs
    return out


def events(recs):
    return [(r.event, r.pid, r.tgid, r.ppid, r.exit_code) for r in recs]


# ---------------------------------------------------------------- parsing captured output
def test_bpftrace_captured_output():
    recs = parse_all(B.parse_line, "bpftrace.txt")
    work = 10965
    assert ("clone", 10970, work, work, 0) in events(recs)        # the thread (CLONE_THREAD)
    assert ("exit", 10974, 10974, work, 3 << 8) in events(recs)   # os._exit(3)
    assert ("exit", 10976, 10976, work, 9) in events(recs)        # SIGKILL
    assert [r.comm for r in recs if r.event == "exec"] == ["python3", "true", "sleep"]
    assert all(r.ts_ns > 0 for r in recs)


def test_bpftrace_lost_events_are_counted():
    lost = []
    recs = [r for ln in lines("bpftrace-lost.txt") for r in B.parse_line(ln, lost.append)]
    assert lost == [2447] and len(recs) == 11


def test_forkstat_captured_output():
    p = F.Parser()
    recs = [r for ln in lines("forkstat.txt") for r in p.line(ln, ts_ns=1)]
    assert ("fork", 11007, 11007, 11005, 0) in events(recs)       # ppid from the parent line
    assert ("exit", 11007, 11007, 0, 3 << 8) in events(recs)
    assert ("exit", 11009, 11009, 0, 9) in events(recs)
    assert sum(r.event == "exec" for r in recs) == 2


def test_forkstat_nobufs_is_a_loss():
    lost = []
    p = F.Parser(lost.append)
    recs = [r for ln in lines("forkstat-nobufs.txt") for r in p.line(ln)]
    assert lost == [1]
    assert ("fork", 15523, 15523, 0, 0) in events(recs)
    assert p.line("garbage that is no forkstat line") is None


def test_auditd_captured_log():
    recs = parse_all(A.parse_line, "auditd.log")
    work = 11034
    ev = events(recs)
    assert ("clone", 11035, work, work, 0) in ev                  # clone3: a thread
    assert ("exit", 11036, 11036, work, 3 << 8) in ev             # exit_group(3)
    assert ("fork", 11038, 11038, work, 0) in ev
    # a death by SIGKILL calls no exit_group: audit has no exit for the killed sleep
    assert not any(e[0] == "exit" and e[1] == 11038 for e in ev)
    assert [r.comm for r in recs if r.event == "exec"] == ["python3", "true", "sleep"]
    # audit(1796156…): wall-clock seconds and ms, shifted by the clock offset
    off = 10**18
    shifted = [r for ln in lines("auditd.log") for r in A.parse_line(ln, off)]
    assert [a.ts_ns - b.ts_ns for a, b in zip(recs, shifted)] == [off] * len(recs)


def test_auditctl_status_and_rules():
    st = A.parse_status((DATA / "auditctl-s.txt").read_text())
    assert st["pid"] == 16317 and st["backlog_limit"] == 8192 and st["lost"] == 0
    listing = ("-a always,exit -F arch=b64 -S clone,fork -F key=toolkit_bench\n"
               "-w /etc/passwd -p wa -k identity\n")
    assert A.our_rules(listing) == [listing.splitlines()[0]]


def test_private_auditd_conf_keeps_the_system_settings():
    conf = A.private_conf("log_file = /var/log/audit/audit.log\nlog_format = ENRICHED\n"
                          "plugin_dir = /etc/audit/plugins.d\n", "/tmp/x")
    assert "log_format = ENRICHED" in conf and "log_file = /tmp/x/audit.log" in conf
    assert "/var/log" not in conf and "plugin_dir = /tmp/x/plugins" in conf


def test_bcc_tool_lines():
    lost, recs = [], []
    for ln in lines("bcc-format.txt")[:6]:
        recs += C.parse_exec_line(ln, 5, lost.append) if not ln.startswith("#") else []
    assert events(recs) == [("exec", 24526, 24526, 24520, 0), ("exec", 24530, 24530, 0, 0)]
    for ln in lines("bcc-format.txt")[6:]:
        recs += C.parse_exit_line(ln, 5, lost.append) if not ln.startswith("#") else []
    assert [r.exit_code for r in recs if r.event == "exit"] == [0, 3 << 8, 9, 11 | 0x80]
    assert [r.comm for r in recs if r.event == "exit"][-1] == "a b"
    assert lost == [12, 3]


def test_peers_declare_what_they_cannot_see():
    for name in ("auditd", "bpftrace", "forkstat", "execsnoop", "exitsnoop"):
        f = provided_fields(name)
        assert "rss_kib" not in f and "start_ns" not in f and "cpu_ns" not in f
    assert "comm" not in provided_fields("forkstat")
    assert "exit_code" not in provided_fields("execsnoop")


def test_bcc_tools_say_why_they_cannot_run_here():
    why = C.bcc_missing()
    if why is None:
        pytest.skip("this kernel has headers and bcc: the BCC tools can run")
    b = get_backend("execsnoop")
    with pytest.raises(Exception, match="BCC.*cannot run here"):
        b.start()


# ---------------------------------------------------------------- for real
def needs(name):
    if not ROOT:
        pytest.skip("needs root")
    if shutil.which(TOOLS[name]) is None and not CI:
        pytest.skip(f"{TOOLS[name]} is not installed (bin/setup installs it)")


_CHILDREN = """
import json, os, subprocess, sys
n, execs = int(sys.argv[1]), int(sys.argv[2])
out = {}
for i in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(i % 5)
    out[pid] = os.waitpid(pid, 0)[1]
for _ in range(execs):
    p = subprocess.Popen(["/bin/true"])
    p.wait(10)
    out[p.pid] = 0
print(json.dumps(out))
"""


def _children(n=20, execs=5, parent=None):
    """n children: forks exiting i % 5, plus `execs` of /bin/true, made by a new process
    (its pid goes into `parent`, a list, if given). -> {pid: status}. A new process,
    because audit never audits a task forked before audit was first enabled since boot
    (kernel/auditsc.c audit_alloc: audit_ever_enabled), so on a fresh boot the test
    process's own forks would be invisible to auditd (found by CI on a fresh machine)."""
    p = subprocess.Popen([sys.executable, "-c", _CHILDREN, str(n), str(execs)],
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    if parent is not None:
        parent.append(p.pid)
    return {int(k): v for k, v in json.loads(out).items()}


def _audit_state():
    st = A.status()
    return {k: st[k] for k in ("enabled", "backlog_limit", "backlog_wait_time")}


@pytest.mark.parametrize("name", NATIVE)
def test_peer_sees_our_children_and_leaves_nothing(name):
    needs(name)
    if name == "auditd":       # no other toolkit process changes the audit state meanwhile
        with A.exclusive():
            _peer_sees_our_children_and_leaves_nothing(name, _audit_state())
    else:
        _peer_sees_our_children_and_leaves_nothing(name, None)


def _peer_sees_our_children_and_leaves_nothing(name, before):
    b = get_backend(name)
    b.start()
    try:
        b.reset_stats()
        parent = []
        kids = _children(parent=parent)
        got, end = [], time.monotonic() + 10
        while time.monotonic() < end:
            got += [r for r in b.read(0.2) if r.tgid in kids]
            if sum(r.event == "exit" for r in got) >= len(kids) and \
                    sum(r.event == "exec" for r in got) >= 5:
                break
        st = b.stats()
        pids = st.extra["own_pids"]
    finally:
        b.stop()
    forks = {r.pid for r in got if r.event == "fork"}
    exits = {r.pid: r.exit_code for r in got if r.event == "exit"}
    missed = (set(kids) - forks) | {p for p in kids if exits.get(p) != kids[p]}
    told = st.events[UNTYPED].dropped + (st.extra.get("kernel_socket_drops") or 0)
    # what a loaded machine may make forkstat lose must at least be counted somewhere
    assert not missed or (name == "forkstat" and told), \
        (name, sorted(missed), st.extra, len(got))
    # forkstat names a child's parent from /proc: for a child gone by then it prints
    # "0 parent [swapper]" (ppid 0, unknown)
    ok_ppids = {parent[0], 0} if name == "forkstat" else {parent[0]}
    assert {r.ppid for r in got if r.event == "fork"} <= ok_ppids
    assert sum(r.event == "exec" for r in got) == 5 or missed
    assert (st.events[UNTYPED].dropped == 0 or missed) and st.extra["own_cpu_s"] >= 0
    time.sleep(0.2)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")
                and "kauditd" not in Path(f"/proc/{p}/comm").read_text()]
    if before is not None:
        assert not A.our_rules(A.auditctl("-l", check=False))
        assert _audit_state() == before and not os.path.exists(A.STATE_FILE)


CRASHER = """
import sys, time
from toolkit.backends.base import get_backend
bs = [get_backend(n) for n in sys.argv[1:]]
for b in bs:
    b.start()
print(" ".join(str(p) for b in bs for p in b.stats().extra["own_pids"]), flush=True)
time.sleep(60)
"""


def test_sigkill_of_the_harness_leaves_nothing_after_the_next_start():
    for n in NATIVE:
        needs(n)
    with A.exclusive():
        before = _audit_state()
    p = subprocess.Popen([sys.executable, "-c", CRASHER, *NATIVE], stdout=subprocess.PIPE,
                         text=True)
    try:
        pids = [int(x) for x in bounded.readline(p.stdout, 60, "the peers' pids").split()]
        assert A.our_rules(A.auditctl("-l")) and os.path.exists(A.STATE_FILE)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    peers = [x for x in pids if "kauditd" not in Path(f"/proc/{x}/comm").read_text()]
    end = time.monotonic() + 10          # PR_SET_PDEATHSIG: they get SIGTERM
    while time.monotonic() < end and any(os.path.exists(f"/proc/{x}") for x in peers):
        time.sleep(0.1)
    assert not [x for x in peers if os.path.exists(f"/proc/{x}")]
    with A.exclusive():
        # (another toolkit process taking the lock first would have recovered it)
        left = os.path.exists(A.STATE_FILE)
        b = A.AuditdBackend()            # the next start cleans up what the crash left
        b.start()
        try:
            assert b.recovered == left
        finally:
            b.stop()
        assert not A.our_rules(A.auditctl("-l", check=False))
        assert _audit_state() == before and not os.path.exists(A.STATE_FILE)


def test_bench_with_the_native_peers(tmp_path, monkeypatch):
    for n in NATIVE:
        needs(n)
    monkeypatch.setenv("TOOLKIT_BUILD_DIR", str(tmp_path / "build"))
    r = CliRunner().invoke(main, ["bench", "forkstorm", "--backend", "cnproc," + ",".join(NATIVE),
                                  "--native", "--count", "60", "--repeat", "1",
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "misses it told you about" in r.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    for n in NATIVE:
        m = s["backends"][n]
        assert m["capture"] == {"fork": 1.0, "exec": 1.0, "exit": 1.0}, (n, m["missed"])
        assert m["exit_code_agreement"] == 1.0 and m["cpu_s_per_1k_events"] > 0
        assert m["rss_error_pct"]["median"] is None          # "-", not 0
    with A.exclusive():
        assert not A.our_rules(A.auditctl("-l", check=False))


def test_auditd_beside_a_running_auditd_reads_its_log(tmp_path, monkeypatch):
    """An audit daemon already registered (as the system's auditd.service would be):
    the backend adds only its rules, reads that daemon's log_file from its end, and
    leaves the daemon running. The "system" daemon here is one of ours with its own
    config, so that the test touches nothing under /etc or /var/log."""
    needs("auditd")
    (tmp_path / "plugins").mkdir()
    conf = tmp_path / "auditd.conf"
    conf.write_text(A.private_conf(Path(A.SYSTEM_CONF).read_text(), str(tmp_path)))
    conf.chmod(0o600)
    monkeypatch.setattr(A, "SYSTEM_CONF", str(conf))
    with A.exclusive():
        before = _audit_state()
        daemon = subprocess.Popen(["auditd", "-n", "-c", str(tmp_path)])
        try:
            end = time.monotonic() + 10
            while A.status().get("pid") != daemon.pid and time.monotonic() < end:
                time.sleep(0.1)
            assert A.status().get("pid") == daemon.pid
            b = A.AuditdBackend()
            b.start()
            try:
                b.reset_stats()
                kids = _children(5, execs=0)
                got, end = [], time.monotonic() + 10
                while time.monotonic() < end and sum(r.event == "exit" for r in got) < 5:
                    got += [r for r in b.read(0.2) if r.tgid in kids]
                st = b.stats()
            finally:
                b.stop()
            assert st.extra["mode"] == "shared"
            assert st.extra["log_file"] == str(tmp_path / "audit.log")
            assert {r.pid: r.exit_code for r in got if r.event == "exit"} == kids
            assert not A.our_rules(A.auditctl("-l", check=False)) and daemon.poll() is None
        finally:
            daemon.terminate()
            daemon.wait(10)
            A.restore(before)
        assert _audit_state() == before


@pytest.mark.parametrize("name", ["forkstat", "bpftrace"])
def test_collector_cpu_confines_the_peers_own_process(name):
    """--collector-cpu confines what a peer started (its tool's process) beside the reader,
    and puts both back: the bench's starved-reader sweep starves the whole collector."""
    from toolkit.bench.cpulimit import CpuLimit
    needs(name)
    b, limit = get_backend(name), CpuLimit(30)
    b.start()
    try:
        pids = b.spawned_pids()
        assert pids and pids == [b.proc.pid]
        before = {p: Path(f"/proc/{p}/cgroup").read_text() for p in pids + [os.getpid()]}
        limit.confine(pids)
        try:
            for p in pids + [os.getpid()]:
                assert limit.dir.name in Path(f"/proc/{p}/cgroup").read_text(), p
        finally:
            limit.release()
        assert {p: Path(f"/proc/{p}/cgroup").read_text() for p in before} == before
    finally:
        limit.remove()
        b.stop()
    assert not limit.dir and b.spawned_pids() == []
