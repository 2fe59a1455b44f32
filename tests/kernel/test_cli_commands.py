"""Commands no other test ran, through the CLI as a user types them, in the lab: `toolkit
lkm load|status|unload` (and parameters the module refuses), `watch --format table
--duration`, `mem --sort/--uid`, `inspect --format json`, `quota list --json` and
`toolkit doctor`. All on the module (no BCC compile).

Each `toolkit` command costs 5-10 s under TCG (Python's start and imports; measured on
6.1 with another VM running), so each test runs the command it is about once or twice
and does the rest (setting up, the other error cases) in-process or through /proc."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bounded import readline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lkm import dmesg_lines, ensure_loaded  # noqa: E402

from toolkit.backends import lkm  # noqa: E402
from toolkit.backends.base import BackendError  # noqa: E402

pytestmark = pytest.mark.kernel

TOOLKIT = str(Path(sys.executable).parent / "toolkit")
UID = 4245
QUICK = 120         # a command on the loaded module: seconds under TCG


def toolkit(*args, timeout=QUICK, **kw):
    return subprocess.run([TOOLKIT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_lkm_load_status_unload_through_the_cli():
    was = lkm.loaded_params() if lkm.is_loaded() else None
    try:
        lkm.unload()
        cp = toolkit("lkm", "load", "--ring-size", 256)
        assert cp.returncode == 0 and cp.stdout.startswith("loaded "), cp
        assert lkm.loaded_params()["ring_size"] == 256
        cp = toolkit("lkm", "status")
        assert cp.returncode == 0, cp
        rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                    for line in cp.stdout.splitlines()[:8] if re.search(r"\S\s{2,}\S", line))
        assert rows["loaded"] == "yes" and "ring_size=256" in rows["params"], rows
        assert rows["ring"].endswith("/256 queued"), rows
        assert re.search(r"^event\s+seen\s+filtered\s+delivered\s+dropped", cp.stdout, re.M)
        with pytest.raises(BackendError, match="already loaded"):      # the CLI's error path
            lkm.load()                                                  # is tested below
        cp = toolkit("lkm", "unload")
        assert (cp.returncode, cp.stdout.strip()) == (0, "unloaded"), cp
        assert not lkm.is_loaded() and lkm.unload() is False
        # parameters the module refuses: ring_size outside 16..1048576, proc_gid below -1
        # (its init says which in dmesg) or either not an int of its type (the kernel's
        # parameter parser): insmod fails, nothing is loaded. Once through the CLI's
        # command and error handler (in this interpreter: a new one costs ~7 s under TCG),
        # the other values through the backend (the same insmod).
        from click.testing import CliRunner

        from toolkit.cli import main
        r = CliRunner().invoke(main, ["lkm", "load", "--proc-gid", "-2"])
        assert r.exit_code != 0 and r.stderr.startswith("error: insmod"), (r.output, r.exception)
        assert not lkm.is_loaded() and "Traceback" not in r.output
        assert any("proc_gid -2 is invalid" in ln for ln in dmesg_lines()[-10:])
        for params, said in (({"ring_size": 15}, "ring_size 15 is out of range"),
                             ({"ring_size": 1048577}, "ring_size 1048577 is out of range"),
                             ({"ring_size": -1}, None), ({"proc_gid": 2147483648}, None)):
            with pytest.raises(BackendError, match="insmod"):
                lkm.load(**params)
            assert not lkm.is_loaded(), params
            if said:
                assert any(said in ln for ln in dmesg_lines()[-10:]), said
    finally:
        if was is not None and not lkm.is_loaded():
            lkm.load(**was)


def test_watch_table_for_a_duration():
    ensure_loaded(ring_size=16384, proc_gid=-1)
    p = subprocess.Popen([TOOLKIT, "watch", "--backend", "lkm", "--format", "table",
                          "--duration", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = readline(p.stderr, what="watch's attached line")
        assert "lkm attached, for 4 s" in line, line
        for _ in range(3):
            subprocess.run(["/bin/true"], check=True, timeout=30)
        out, err = p.communicate(timeout=QUICK)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:1] and "comm" in lines[0].split(), lines[:2]
    assert sum(1 for ln in lines[1:] if " exec " in f" {ln} " and ln.rstrip().endswith("true")) \
        >= 3, out
    # the drop counters close it, on stderr
    assert re.search(r"^event\s+seen\s+filtered\s+delivered\s+dropped", err, re.M), err
    assert re.search(r"^dropped \d+, kprobe/program missed \d+", err, re.M), err


def as_uid():
    os.setgroups([])
    os.setresgid(UID, UID, UID)
    os.setresuid(UID, UID, UID)


def test_mem_sort_and_uid():
    """--uid keeps that user's processes only, --sort pid orders them (the default rss
    order is checked on test_cli_kernel.py's outputs)."""
    ensure_loaded(ring_size=16384, proc_gid=-1)
    kids = [subprocess.Popen(["sleep", "60"], preexec_fn=as_uid) for _ in range(3)]
    try:
        cp = toolkit("mem", "--backend", "lkm", "--format", "json", "--uid", UID,
                     "--sort", "pid")
        assert cp.returncode == 0, cp
        procs = json.loads(cp.stdout)["processes"]
        assert [p["pid"] for p in procs] == sorted(k.pid for k in kids), procs
        assert {p["uid"] for p in procs} == {UID}
    finally:
        for k in kids:
            k.kill()
            k.wait(30)


def test_inspect_json():
    ensure_loaded(ring_size=16384, proc_gid=-1)
    child = subprocess.Popen(["sleep", "60"])
    try:
        cp = toolkit("inspect", child.pid, "--backend", "lkm", "--format", "json", "--vmas")
        assert cp.returncode == 0, cp
        d = json.loads(cp.stdout)
        assert (d["format"], d["backend"], d["pid"], d["comm"]) == \
            ("toolkit-inspect", "lkm", child.pid, "sleep"), d
        assert d["page_size"] == os.sysconf("SC_PAGE_SIZE") and d["paging_levels"] in (4, 5)
        assert d["regions"]["heap"]["size"] == \
            d["regions"]["heap"]["end"] - d["regions"]["heap"]["start"] >= 0
        assert any(v["name"] == "[stack]" for v in d["vmas"]), d["vmas"]
        assert "pgd" not in d and "check" not in d
    finally:
        child.kill()
        child.wait(30)


def quota_write(data: bytes) -> None:
    """/proc/toolkit/quota directly (the module's format, lkm/quota_proc.c)."""
    fd = os.open(lkm.PROC_DIR / "quota", os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_quota_list_json():
    ensure_loaded(ring_size=16384, proc_gid=-1)
    child = subprocess.Popen(["sleep", "60"])
    try:
        quota_write(b"set %d heap=%d files=50" % (child.pid, 1 << 30))
        cp = toolkit("quota", "list", "--backend", "lkm", "--json")
        assert cp.returncode == 0, cp
        rows = [json.loads(line) for line in cp.stdout.splitlines()]
        mine = [r for r in rows if r["pid"] == child.pid]
        assert len(mine) == 1, rows
        assert mine[0]["files_quota"] == 50 and mine[0]["heap_quota"] == 1 << 30, mine
        assert mine[0]["comm"] == "sleep" and mine[0]["files"] >= 3, mine
    finally:
        quota_write(b"clear %d" % child.pid)
        child.kill()
        child.wait(30)


def test_doctor_in_the_lab_says_both_kernel_backends_run_natively():
    """Inside the lab the module and BCC run natively (the host-side lab check is left
    out: --no-lab). The table's rendering of the same verdicts is tested natively."""
    cp = toolkit("doctor", "--json", "--no-lab", "--backend", "lkm,ebpf", timeout=300)
    assert cp.returncode == 0, cp
    d = json.loads(cp.stdout)
    assert d["kernel"] == os.uname().release
    for b in ("lkm", "ebpf", "ebpf:bcc"):     # BCC itself, not only the best engine
        assert d["verdicts"][b]["verdict"] == "native", (b, d["verdicts"][b], d["checks"])
