"""The kernel's own process-event interfaces (cnproc, taskstats, acct).

Unit tests parse messages and records captured natively on 6.18 (tests/data/netlink,
re-captured with tests/data/netlink/capture.py): child 1 touched 8 MiB and exec'd
`sh -c 'exit 5'`; child 2 forked without exec and exited 3. The native tests attach each
backend for real (root; this kernel has all three interfaces); they are not `kernel`
tests, so they run in the native run.
"""
import os
import struct
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit import schema
from toolkit.backends import acct, cnproc, netlink, taskstats
from toolkit.backends.base import UNTYPED, get_backend, provided_fields
from toolkit.bench import cpulimit
from toolkit.cli import main
from toolkit.errors import BenchError

DATA = Path(__file__).parent / "data" / "netlink"
ROOT = os.geteuid() == 0


def recorded(name):
    lines = (DATA / name).read_text().splitlines()
    pids = [int(x) for x in lines[0].split()[2:]]
    return pids, [bytes.fromhex(x) for x in lines[1:] if x]


# ---------------------------------------------------------------- cnproc
def cn_records():
    (p1, p2), dgrams = recorded("cnproc.hex")
    out = []
    for d in dgrams:
        for _t, _f, _s, _p, payload in netlink.split_messages(d):
            out.append(cnproc.parse_event(payload))
    return p1, p2, out


def test_cnproc_recorded_fork_exec_exit():
    p1, p2, evs = cn_records()
    recs = [r for _, _, _, r in evs if r is not None and r.tgid in (p1, p2)]
    kinds = [(r.tgid, r.event) for r in recs]
    assert kinds == [(p1, "fork"), (p1, "exec"), (p1, "exit"), (p2, "fork"), (p2, "exit")]
    ex = {r.tgid: r for r in recs if r.event == "exit"}
    assert ex[p1].exit_code == 5 << 8 and ex[p2].exit_code == 3 << 8
    fork = recs[0]
    assert fork.ppid == ex[p1].ppid != 0 and fork.ts_ns < ex[p1].ts_ns


def test_cnproc_recorded_sequence_has_no_gap():
    _, _, evs = cn_records()
    tr = cnproc.SeqTracker()
    for seq, what, cpu, _ in evs:
        if what != cnproc.PROC_EVENT_NONE:
            tr.see(cpu, seq)
    assert tr.lost == 0


def test_seq_tracker_counts_gaps_per_cpu():
    tr = cnproc.SeqTracker()
    for cpu, seq in [(0, 10), (1, 500), (0, 11), (0, 15), (1, 501), (1, 503), (0, 14)]:
        tr.see(cpu, seq)
    assert tr.lost == 3 + 1 and tr.reordered == 1
    tr2 = cnproc.SeqTracker()
    tr2.see(0, 0xFFFFFFFF)
    assert tr2.see(0, 1) == 1    # wraps


@pytest.mark.parametrize("bad", [b"", b"\0" * 10, struct.pack("=IIIIHH", 9, 9, 0, 0, 16, 0)
                                 + b"\0" * 16])
def test_cnproc_malformed(bad):
    with pytest.raises(ValueError):
        cnproc.parse_event(bad)


def test_split_messages_rejects_truncation():
    msg = netlink.nlmsg(3, b"x" * 20)
    with pytest.raises(ValueError):
        list(netlink.split_messages(msg[:-4]))


# ---------------------------------------------------------------- taskstats
def test_taskstats_recorded_exits():
    (p1, p2), dgrams = recorded("taskstats.hex")
    got = {}
    for d in dgrams:
        for _t, _f, _s, _p, payload in netlink.split_messages(d):
            for kind, ident, st in taskstats.parse_new(payload):
                if kind == "pid":
                    got[ident] = st
    assert got[p1]["exit_code"] == 5 << 8 and got[p2]["exit_code"] == 3 << 8
    assert got[p1]["comm"] == "sh" and got[p1]["ppid"] == got[p2]["ppid"]
    # peak RSS belongs to the mm: the 8 MiB touched before exec went with the old one,
    # so the shell reports its own, smaller peak
    assert 0 < got[p1]["hiwater_rss_kib"] < 8 * 1024
    assert got[p1]["flag"] & taskstats.AFORK == 0 and got[p2]["flag"] & taskstats.AFORK
    rec = taskstats.to_record(p1, got[p1], 123)
    assert rec.event == "exit" and rec.tgid == p1 and rec.ts_ns == 123


def test_taskstats_truncated_stats():
    with pytest.raises(ValueError):
        taskstats.parse_stats(b"\x0e\0" + b"\0" * 40)


def test_taskstats_v15_layout_shift():
    assert taskstats.stats_offset(15) - taskstats.stats_offset(14) == 48
    assert taskstats.stats_offset(16) == taskstats.stats_offset(13)


# ---------------------------------------------------------------- acct
def test_acct_recorded_records():
    (p1, p2), recs = recorded("acct.hex")
    got = {a["pid"]: a for a in map(acct.parse_record, recs)}
    assert got[p1]["exit_code"] == 5 << 8 and got[p1]["comm"] == "sh"
    assert got[p2]["exit_code"] == 3 << 8
    assert not got[p1]["flag"] & acct.AFORK and got[p2]["flag"] & acct.AFORK
    assert got[p1]["ppid"] == got[p2]["ppid"] != 0


def test_acct_bad_records():
    with pytest.raises(ValueError):
        acct.parse_record(b"\0" * 63)
    with pytest.raises(ValueError):
        acct.parse_record(bytes([0, 2]) + b"\0" * 62)     # a v2 record


def test_comp_t_and_suspension_rule():
    assert acct.comp_t(5) == 5 and acct.comp_t((1 << 13) | 3) == 24
    assert acct.would_suspend(1.9, False) and not acct.would_suspend(2.0, False)
    assert acct.would_suspend(3.9, True) and not acct.would_suspend(4.0, True)


# ---------------------------------------------------------------- shared
def test_proc_net_netlink_drops():
    text = ("sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops"
            "    Inode\n0000000000000001 11  1234       00000001 0        0        0     2"
            "        17       98765\n")
    assert netlink.parse_proc_net_netlink(text) == {98765: 17}


def test_provides_declared():
    assert "hiwater_rss_kib" not in provided_fields("cnproc")
    assert "hiwater_rss_kib" in provided_fields("taskstats")
    assert provided_fields("lkm") == schema.FIELD_NAMES


@pytest.mark.parametrize("pct", [0, -1, 100.5, 1000])
def test_collector_cpu_bounds(pct):
    with pytest.raises(BenchError):
        cpulimit.check_pct(pct)


def test_quota_period():
    assert cpulimit.quota_period(5) == (5000, 100000)
    assert cpulimit.quota_period(0.5) == (5000, 1000000)


@pytest.mark.parametrize("args,text", [
    (["--rate", "0,100"], "rate sweep"),
    (["--rate", "100,-5"], "-5"),
    (["--rate", "fast"], "numbers"),
    (["--collector-cpu", "0"], "> 0 and <= 100"),
    (["--collector-cpu", "150"], "> 0 and <= 100"),
])
def test_bench_bad_rate_and_cpu(args, text):
    r = CliRunner().invoke(main, ["bench", "forkstorm", "--backend", "cnproc", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 2 and text in r.output


# ---------------------------------------------------------------- for real (native)
needs_root = pytest.mark.skipif(not ROOT, reason="the interfaces need root")


def _child(code, mib=8):
    pid = os.fork()
    if pid == 0:
        x = bytearray(mib << 20)
        for i in range(0, len(x), 4096):
            x[i] = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return pid, status


def _records_of(b, pid, timeout=2.0):
    end, out = time.monotonic() + timeout, []
    while time.monotonic() < end and not any(r.event == "exit" for r in out):
        out += [r for r in b.read(0.2) if r.tgid == pid]
    return out


@needs_root
@pytest.mark.parametrize("name", ["cnproc", "taskstats", "acct"])
def test_backend_for_real(name):
    check_backend_for_real(name)


def check_backend_for_real(name):
    """Attach `name`, fork a child that touches 8 MiB and exits 7: its records, exactly
    (also run in the lab on each lab kernel: tests/kernel/test_interfaces_lab.py)."""
    b = get_backend(name)
    b.start()
    try:
        b.reset_stats()
        pid, status = _child(7)
        recs = _records_of(b, pid)
        st = b.stats()
    finally:
        b.stop()
    exits = [r for r in recs if r.event == "exit"]
    assert len(exits) == 1 and exits[0].exit_code == status == 7 << 8
    assert exits[0].ppid == os.getpid()
    if name == "cnproc":
        assert [r.event for r in recs] == ["fork", "exit"]
        assert st.events[UNTYPED].dropped == 0 and st.dropped == 0
    if name == "taskstats":   # the kernel's peak RSS covers the 8 MiB the child touched
        assert exits[0].hiwater_rss_kib >= 8 * 1024
        assert st.extra["socket_drops"] == 0
    if name == "acct":
        assert exits[0].uid == os.getuid() and not st.extra["suspended"]


@needs_root
@pytest.mark.parametrize("typed", [False, True])
def test_cnproc_counts_what_a_full_socket_lost(typed):
    """The smallest receive buffer and no reading while 200 children come and go: what
    was lost is counted by the socket's sk_drops (untyped with one socket, per type with
    one socket per type), and every fork and exit of ours was read or counted."""
    if typed and not cnproc.CnprocBackend.kernel_filters():
        pytest.skip("this kernel's connector has no event-type filter (6.6+)")
    b = cnproc.CnprocBackend(rcvbuf=1, typed=typed)   # the kernel rounds up to its minimum
    b.start()
    try:
        b.reset_stats()
        pids = {_child(0, mib=0)[0] for _ in range(200)}
        got = b.drain(0.3)
        st = b.stats()
    finally:
        b.stop()
    mine = {t: sum(1 for r in got if r.event == t and r.tgid in pids) for t in ("fork", "exit")}
    assert st.extra["enobufs"] >= 1
    if typed:
        for t in ("fork", "exit"):
            assert st.events[t].dropped == st.extra["socket_drops"][t] > 0
            # others' events may be among the drops, so >=; never fewer than our misses
            assert mine[t] + st.events[t].dropped >= 200
        assert st.events[UNTYPED].dropped == 0
    else:
        lost = st.extra["socket_drops"][UNTYPED]
        assert lost > 0 and st.events[UNTYPED].dropped == lost
        assert st.extra["seq_lost"] <= lost     # gaps miss a lost tail
        assert mine["fork"] + mine["exit"] + lost >= 400


@needs_root
def test_acct_reports_suspension(tmp_path):
    """Accounting stops writing below 2% free space (kernel/acct.c): the backend says so."""
    d = tmp_path / "small"
    d.mkdir()
    assert os.system(f"mount -t tmpfs -o size=1m toolkit-test {d}") == 0
    try:
        st = os.statvfs(d)
        (d / "fill").write_bytes(b"\0" * ((st.f_bavail - 2) * st.f_bsize))
        b = acct.AcctBackend(directory=str(d))
        try:
            b.start()
            pid, _ = _child(0, mib=0)
            recs = _records_of(b, pid, timeout=1.0)
            s = b.stats()
        finally:
            b.stop()
        assert recs == [] and s.extra["suspended"] and s.extra["free_pct_min"] < 2
    finally:
        os.system(f"umount {d}")


def test_doctor_says_the_interfaces_run_natively_here():
    r = CliRunner().invoke(main, ["doctor", "--no-lab", "--backend", "cnproc,taskstats,acct"])
    if not ROOT:
        pytest.skip("verdicts need root")
    assert r.exit_code == 0, r.output
    for b in ("cnproc", "taskstats", "acct"):
        assert f"{b:9} NATIVE" in r.output


@needs_root
def test_bench_natively_with_the_interfaces(tmp_path, monkeypatch):
    """A small native bench: a rate sweep under a confined reader, no lab."""
    monkeypatch.setenv("TOOLKIT_BUILD_DIR", str(tmp_path / "build"))
    r = CliRunner().invoke(main, ["bench", "forkstorm", "--backend", "cnproc,taskstats,acct",
                                  "--count", "40", "--repeat", "1", "--rate", "200,400",
                                  "--collector-cpu", "50", "--out", str(tmp_path / "run")])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0, r.output
    assert "lab:" not in r.output and "misses it told you about" in r.output
    d = tmp_path / "run"
    assert (d / "capture-vs-rate.png").exists()
    import json
    s = json.loads((d / "summary.json").read_text())
    assert [e["rate"] for e in s["rate_sweep"]] == [200, 400]
    assert "cgroup" in s["collector_cpu"]
    b = s["backends"]
    assert b["cnproc"]["capture"] == {"fork": 1.0, "exec": 1.0, "exit": 1.0}
    for name in ("taskstats", "acct"):
        assert b[name]["capture"] == {"fork": None, "exec": None, "exit": 1.0}
        assert b[name]["exit_code_agreement"] == 1.0
    # fields an interface lacks are unavailable, not zero
    assert b["cnproc"]["peak_rss_error_pct"]["median"] is None
    assert b["acct"]["peak_rss_error_pct"]["median"] is None
    assert b["taskstats"]["peak_rss_error_pct"]["n"] == 80
    assert all(e["throttled"] is not None for e in s["runs"] if e["backend"] != "none")


def test_watch_shows_unavailable_fields_as_dash():
    from toolkit.cli.watch import _json_record, _watch_row
    rec = schema.Record(ts_ns=10, start_ns=0, cpu_ns=0, rss_kib=0, hiwater_rss_kib=0,
                        type=int(schema.EventType.EXIT), pid=5, tgid=5, ppid=1, uid=0, cpu=0,
                        flags=0, exit_code=0, comm="")
    row = _watch_row(rec, 0, cnproc.CnprocBackend.provides)
    assert row[5:7] == ["-", "-"] and row[8:] == ["-", "-", "-"]
    assert _watch_row(rec, 0)[8] == 0              # a backend that provides all: data
    d = _json_record(rec, taskstats.TaskstatsBackend.provides)
    assert d["rss_kib"] is None and d["hiwater_rss_kib"] == 0
