"""Commands no other test ran, through the CLI as a user types them, in the lab: `toolkit
lkm load|status|unload` (and a bad --ring-size), `watch --format table --duration`,
`mem --sort/--uid`, `inspect --format json`, `quota list --json` and `toolkit doctor`.
All on the module (no BCC compile: seconds under TCG)."""
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
from test_lkm import ensure_loaded  # noqa: E402

from toolkit.backends import lkm  # noqa: E402

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
        # loading twice is a clear error, not a traceback
        cp = toolkit("lkm", "load")
        assert cp.returncode != 0 and "error:" in cp.stderr and "already loaded" in cp.stderr
        assert "Traceback" not in cp.stderr
        cp = toolkit("lkm", "unload")
        assert (cp.returncode, cp.stdout.strip()) == (0, "unloaded"), cp
        assert not lkm.is_loaded()
        cp = toolkit("lkm", "status")
        assert cp.returncode == 0 and re.search(r"^loaded\s+no$", cp.stdout, re.M), cp
        cp = toolkit("lkm", "unload")
        assert cp.returncode == 0 and "was not loaded" in cp.stdout, cp
        # a ring size the module refuses (16..1048576): an error, and nothing loaded
        for bad in (15, 1048577, -1):
            cp = toolkit("lkm", "load", "--ring-size", bad)
            assert cp.returncode != 0 and "error:" in cp.stderr, (bad, cp)
            assert "Traceback" not in cp.stderr and not lkm.is_loaded(), (bad, cp.stderr)
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
    ensure_loaded(ring_size=16384, proc_gid=-1)
    kids = [subprocess.Popen(["sleep", "60"], preexec_fn=as_uid) for _ in range(3)]
    try:
        cp = toolkit("mem", "--backend", "lkm", "--format", "json", "--uid", UID,
                     "--sort", "pid")
        assert cp.returncode == 0, cp
        procs = json.loads(cp.stdout)["processes"]
        assert [p["pid"] for p in procs] == sorted(k.pid for k in kids), procs
        assert {p["uid"] for p in procs} == {UID}
        cp = toolkit("mem", "--backend", "lkm", "--format", "json", "--sort", "rss")
        assert cp.returncode == 0, cp
        rss = [p["rss_kib"] for p in json.loads(cp.stdout)["processes"]]
        assert len(rss) > 3 and rss == sorted(rss, reverse=True)
        cp = toolkit("mem", "--backend", "lkm", "--uid", UID, "--sort", "pid")
        assert cp.returncode == 0, cp
        table = [ln.split() for ln in cp.stdout.splitlines()
                 if ln.split()[:1] and ln.split()[0].isdigit() and ln.split()[-1] == "sleep"]
        assert [int(r[0]) for r in table] == sorted(k.pid for k in kids), cp.stdout
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


def test_quota_list_json():
    ensure_loaded(ring_size=16384, proc_gid=-1)
    child = subprocess.Popen(["sleep", "60"])
    try:
        cp = toolkit("quota", "set", "--backend", "lkm", "--files", 50, "--heap", "1G", child.pid)
        assert cp.returncode == 0, cp
        cp = toolkit("quota", "list", "--backend", "lkm", "--json")
        assert cp.returncode == 0, cp
        rows = [json.loads(line) for line in cp.stdout.splitlines()]
        mine = [r for r in rows if r["pid"] == child.pid]
        assert len(mine) == 1, rows
        assert mine[0]["files_quota"] == 50 and mine[0]["heap_quota"] == 1 << 30, mine
        assert mine[0]["comm"] == "sleep" and mine[0]["files"] >= 3, mine
    finally:
        toolkit("quota", "clear", "--backend", "lkm", child.pid)
        child.kill()
        child.wait(30)


def test_doctor_in_the_lab_says_both_kernel_backends_run_natively():
    cp = toolkit("doctor", "--json", timeout=300)
    d = json.loads(cp.stdout)
    assert d["kernel"] == os.uname().release
    for b in ("lkm", "ebpf"):
        assert d["verdicts"][b]["verdict"] == "native", (b, d["verdicts"][b], d["checks"])
    cp = toolkit("doctor", "--backend", "lkm,ebpf", "--no-lab", timeout=300)
    assert cp.returncode == 0, cp
    assert re.search(r"^lkm\s+NATIVE\s", cp.stdout, re.M), cp.stdout
    assert re.search(r"^ebpf\s+NATIVE\s", cp.stdout, re.M), cp.stdout
