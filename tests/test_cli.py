"""Bad input gets a clear error and a non-zero exit, never a traceback."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import main


def run(*args):
    r = CliRunner().invoke(main, list(args))
    # a traceback would surface as an exception other than SystemExit
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.mark.parametrize("args", [
    ["watch", "--backend", "bogus"],
    ["mem", "--backend", "lkm", "--uid", "-3"],
    ["watch", "--duration", "0"],
    ["watch", "--format", "xml"],
    ["doctor", "--backend", "nope"],
    ["lab", "run"],
    ["no-such-command"],
])
def test_bad_flags_exit_2_with_message(args):
    r = run(*args)
    assert r.exit_code == 2
    assert "Error" in r.output or "error" in r.output


def test_probe_only_for_ebpf():
    r = run("watch", "--backend", "lkm", "--probe", "kprobe", "--duration", "1")
    assert r.exit_code == 2 and "--probe applies to --backend ebpf only" in r.output


def test_doctor_json_exit_status_matches_verdicts():
    r = run("doctor", "--no-lab", "--json")
    data = json.loads(r.output)
    verdicts = {b: v["verdict"] for b, v in data["verdicts"].items()}
    assert set(verdicts) == {"lkm", "ebpf"}
    expect = 1 if "unavailable" in verdicts.values() else 3 if "lab" in verdicts.values() else 0
    assert r.exit_code == expect
    names = {c["name"] for c in data["checks"]}
    for needed in ("root", "loadable modules", "kprobes", "kernel headers", "BTF", "tracefs",
                   "bcc (python3-bpfcc)", "lockdown / module signing"):
        assert needed in names


@pytest.mark.skipif(Path("/proc/modules").exists(), reason="this kernel can load modules")
def test_doctor_says_this_host_cannot_run_lkm_natively():
    r = run("doctor", "--no-lab", "--backend", "lkm")
    assert r.exit_code == 1
    assert "CONFIG_MODULES" in r.output and "--lab" in r.output


@pytest.mark.skipif(Path("/proc/modules").exists(), reason="this kernel can load modules")
def test_kernel_backend_without_kernel_support_points_to_doctor_and_lab():
    r = run("mem", "--backend", "lkm")
    assert r.exit_code == 2
    assert "toolkit doctor" in r.output and "--lab" in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and "toolkit" in r.output
