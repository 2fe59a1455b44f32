"""Native unit tests of the lkm backend's parsers, on text captured from the module in
the lab (tests/data/lkm/*.txt)."""
from pathlib import Path

import pytest

from toolkit import schema
from toolkit.backends import lkm
from toolkit.backends.base import BackendError, MemInfo, ProcInfo, Stats

DATA = Path(__file__).parent / "data" / "lkm"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_stats():
    s = lkm.parse_stats(text("stats.txt"))
    assert isinstance(s, Stats) and s.backend == "lkm"
    assert set(s.events) == set(schema.EVENT_BY_NAME)
    for c in s.events.values():
        assert c.seen == c.filtered + c.delivered + c.dropped
    assert s.ring_size > 0 and s.ring_fill >= 0 and s.read_lost >= 0
    # captured with both filters off: the stats file says "off", not a number
    assert s.extra["uid_filter"] is None and s.extra["ppid_filter"] is None
    assert "cleared" in s.extra
    assert [h.name for h in s.hooks] == ["wake_up_new_task", "setup_new_exec", "do_exit"]
    assert s.ring_size == 4096
    assert all(h.count > 0 and h.ns_per_call > 0 for h in s.hooks)
    assert s.as_dict()["missed"] == sum(h.missed for h in s.hooks)


def test_stats_synthetic_values():
    s = lkm.parse_stats("record_version 2\nring_size 16\nring_fill 3\nread_lost 2\n"
                        "cleared 5\nuid_filter 1000\nppid_filter 42\nevents fork,exit\n"
                        "event fork seen 10 filtered 1 delivered 4 dropped 5\n"
                        "hook do_exit count 7 total_ns 700 missed 2\n")
    assert (s.ring_size, s.ring_fill, s.read_lost) == (16, 3, 2)
    assert s.extra == {"cleared": 5, "uid_filter": 1000, "ppid_filter": 42,
                       "events": ["fork", "exit"], "record_version": 2}
    f = s.events["fork"]
    assert (f.seen, f.filtered, f.delivered, f.dropped) == (10, 1, 4, 5)
    assert s.events["exec"].seen == 0
    assert s.dropped == 5 and s.missed == 2 and s.hooks[0].ns_per_call == 100
    assert lkm.parse_stats("record_version 2\nevents none\n").extra["events"] == []
    uid0 = lkm.parse_stats("record_version 2\nuid_filter 0\nppid_filter off\n").extra
    assert uid0["uid_filter"] == 0 and uid0["ppid_filter"] is None   # uid 0 is not "off"


def test_stats_refuses_other_record_version():
    with pytest.raises(ValueError, match="record version"):
        lkm.parse_stats(f"record_version {schema.RECORD_VERSION + 1}\n")


def test_events_round_trip():
    raw = text("events.txt")
    recs = lkm.parse_events(raw)
    assert len(recs) == len(raw.splitlines())
    for line, r in zip(raw.splitlines(), recs):
        assert schema.format_line(r) == line
    exits = [r for r in recs if r.event == "exit"]
    assert exits and all(r.flags & schema.FLAGS["HAS_MM"] for r in exits)
    assert {r.event for r in recs} >= {"fork", "clone", "exec", "exit", "kill"}
    assert "a b.sh" in {r.comm for r in recs}          # printed as a\\040b.sh
    # `toolkit quota run --files 3 -- python3 ...`: one descriptor too many
    (kill,) = [r for r in recs if r.event == "kill"]
    assert kill.quota_kind == schema.QUOTA_KINDS["files"] and kill.quota == 3
    assert kill.quota_value > kill.quota and kill.comm == "python3"


def test_events_escaped_comm():
    line = "1 2 0 0 0 1 3 3 1 0 0 0 0 0 0 0 0 a\\040b\\134c\\011"
    (r,) = lkm.parse_events(line + "\n\n")
    assert r.comm == "a b\\c\t"
    assert schema.format_line(r) == line


def test_processes():
    procs = lkm.parse_processes(text("processes.txt"))
    assert procs and all(isinstance(p, ProcInfo) for p in procs)
    init = procs[0]
    assert (init.pid, init.ppid, init.comm, init.state) == (1, 0, "virtme-ng-init", "S")
    assert all(p.hiwater_rss_kib >= p.rss_kib and p.threads >= 1 for p in procs)


def test_processes_bad_header():
    with pytest.raises(ValueError):
        lkm.parse_processes("1 0 0 S 1 1 1 1 1 1 init\n")
    with pytest.raises(ValueError):
        lkm.parse_processes("# " + " ".join(lkm.PROCESS_COLUMNS) + "\n1 2 3\n")


def test_processes_comm_with_space():
    t = "# " + " ".join(lkm.PROCESS_COLUMNS) + "\n5 1 0 R 1 2 3 4 5 6 my\\040prog\n"
    (p,) = lkm.parse_processes(t)
    assert p.comm == "my prog" and p.threads == 6


def test_meminfo():
    m = lkm.parse_meminfo(text("meminfo.txt"))
    assert isinstance(m, MemInfo)
    assert m.total_kib == m.used_kib + m.free_kib + m.buffers_kib + m.cached_kib
    with pytest.raises(ValueError):
        lkm.parse_meminfo("total_kib 1\n")


def test_vermagic():
    blob = b"\x7fELF...\0license=GPL\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload \0x"
    assert lkm.vermagic(blob).split()[0] == "6.1.0-56-amd64"
    assert lkm.vermagic(b"nothing") is None


def test_build_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLKIT_BUILD_DIR", str(tmp_path))
    assert lkm.build_dir("x") == tmp_path
    monkeypatch.delenv("TOOLKIT_BUILD_DIR")
    assert lkm.build_dir("6.1.0-56-amd64") == Path("/var/tmp/toolkit/6.1.0-56-amd64/lkm")


def test_missing_headers_is_a_clear_error():
    with pytest.raises(BackendError, match="headers"):
        lkm.build("0.0.0-no-such-kernel")


def test_cli_errors_are_one_line(monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import main
    from toolkit.errors import EXIT_ERROR
    r = CliRunner().invoke(main, ["lkm", "build", "--release", "0.0.0-no-such-kernel"])
    assert r.exit_code == EXIT_ERROR and "Traceback" not in r.output
    assert r.output.startswith("error: kernel headers for 0.0.0-no-such-kernel")
