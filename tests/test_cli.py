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
    # each eBPF engine's own verdict beside the backend's (the best of the two)
    assert set(verdicts) == {"lkm", "ebpf", "ebpf:bcc", "ebpf:core", "cnproc", "taskstats",
                             "acct", "auditd", "bpftrace", "forkstat", "execsnoop",
                             "exitsnoop"}
    order = ("native", "lab", "unavailable")
    assert verdicts["ebpf"] == min(verdicts["ebpf:bcc"], verdicts["ebpf:core"], key=order.index)
    wanted = [v for b, v in verdicts.items() if ":" not in b]
    expect = 1 if "unavailable" in wanted else 3 if "lab" in wanted else 0
    assert r.exit_code == expect
    names = {c["name"] for c in data["checks"]}
    for needed in ("root", "loadable modules", "kprobes", "kernel headers", "BTF", "tracefs",
                   "bcc (python3-bpfcc)", "lockdown / module signing", "proc connector",
                   "taskstats", "BSD process accounting v3", "audit syscall rules",
                   "auditd installed", "bpftrace installed", "forkstat installed"):
        assert needed in names


def test_doctor_needs_come_from_the_backends_declarations():
    """Each backend class declares the doctor checks it needs (doctor_needs), and doctor
    builds its "needed by" column and its verdicts from those alone: every declared need
    is a check doctor makes, and every check's needed_by is exactly the subjects that
    declare it."""
    from toolkit import doctor as d
    from toolkit.backends.base import doctor_subjects, subject_class
    src = (Path(d.__file__)).read_text()
    made = {f"{peer} installed" for peer, _, _ in d.PEER_TOOLS} | \
        {name for name, _ in d.INTERFACES}
    for s in doctor_subjects():
        needs = subject_class(s).doctor_needs
        assert needs and "root" in needs, s
        for n in needs:
            assert n in made or f'Check("{n}"' in src, (s, n)
    for c in d.checks(mount=False):
        assert set(c.needed_by) == {s for s in doctor_subjects()
                                    if c.name in subject_class(s).doctor_needs}, c.name


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


def test_every_command_is_registered_in_one_list():
    from toolkit.cli import COMMANDS
    assert sorted(main.commands) == sorted(c.name for c in COMMANDS)
    assert {"doctor", "lab", "watch", "mem", "lkm", "bench", "report"} <= set(main.commands)


def test_help_lists_the_exit_codes():
    from toolkit.errors import EXIT_CODES
    r = run("--help")
    assert r.exit_code == 0 and "Exit status:" in r.output
    for code in EXIT_CODES:
        assert f"  {code} " in r.output, code


@pytest.mark.parametrize("args", [
    ["lkm", "build", "--release", "0.0.0-no-such-kernel"],     # BackendError
    ["report", "/proc/self"],                                    # ReportError
    ["bench", "forkstorm", "--backend", "ps", "--out", "/proc/no/such/dir"],  # OSError
])
def test_the_same_failure_exits_the_same_everywhere(args):
    """Every ToolkitError (backend, report, bench, OSError) goes through the one handler:
    exit 2, `error:` on the first line, no traceback."""
    from toolkit.errors import EXIT_ERROR
    r = run(*args)
    assert r.exit_code == EXIT_ERROR, r.output
    assert r.output.startswith("error: "), r.output


@pytest.mark.parametrize("value, message", [
    ("0,1,x", "whole numbers"), ("1,-5", "must be >= 0"), (",", "empty list")])
def test_list_options_are_checked(value, message):
    r = run("bench", "forkstorm", "--backend", "ps", "--lifetime", value)
    assert r.exit_code == 2 and message in r.output, r.output


@pytest.mark.parametrize("args", [
    ["lab", "run", "--kernel", "5.10", "--", "true"],
    ["lab", "info", "--kernel", "5.10"],
    ["bench", "forkstorm", "--kernel", "5.10"],
    ["bench", "forkstorm", "--kernel", "6.1", "--native"],
])
def test_unknown_lab_kernel_exits_2_naming_it(args):
    r = run(*args)
    assert r.exit_code == 2 and ("5.10" in r.output or "--native" in r.output), r.output


def test_lab_info_lists_every_cached_lab_kernel_and_the_cache():
    from toolkit import kcache, lab
    r = run("lab", "info")
    releases = [k["release"] for k in lab.lab_kernels()]
    assert releases and all(rel in r.output for rel in releases), r.output
    assert "cached lab kernels" in r.output and str(kcache.kernels_dir()) in r.output
    j = json.loads(run("lab", "info", "--json").output)
    assert [k["release"] for k in j["kernels"]] == releases
    assert j["cache"] == str(kcache.kernels_dir()) and j["leftovers"] == []


def test_lab_kernels_lists_both_lines_with_sizes():
    """What bin/setup leaves: both lab lines cached, intact, with their sizes."""
    r = run("lab", "kernels")
    assert r.exit_code == 0, r.output
    j = json.loads(run("lab", "kernels", "--json").output)
    lines = {k["line"]: k for k in j["kernels"] if k["status"] == "ok"}
    assert {"6.1", "6.12"} <= set(lines), j
    for k in lines.values():
        assert k["bytes"] > 50e6 and k["release"] in r.output
        assert f"{k['bytes'] / 1e6:.0f} MB" in r.output
    assert set(j["lines"]) >= {"6.1", "6.12"}


def test_lab_kernels_bad_specs_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    for args in (["fetch", "5.10"], ["remove", "6.1"]):
        r = run("lab", "kernels", *args)
        assert r.exit_code == 2 and r.output.startswith("error: "), r.output


def test_leftovers_of_an_old_setup_are_reported_never_removed(tmp_path, monkeypatch):
    from toolkit import legacy
    src, pin = tmp_path / "toolkit-bookworm-backports.sources", tmp_path / "pin"
    src.write_text("Types: deb\n")
    pin.write_text("Package: *\n")
    found = legacy.findings(src, pin, ["linux-image-6.12.95+deb12-amd64",
                                       "linux-headers-6.12.95+deb12-amd64",
                                       "linux-image-amd64"])
    text = json.dumps(found)
    assert str(src) in text and str(pin) in text and "apt-get update" in text
    assert "apt-get purge linux-image-6.12.95+deb12-amd64 linux-headers-6.12.95+deb12-amd64" \
        in text and "linux-image-amd64" in text
    assert src.exists() and pin.exists()
    monkeypatch.setattr(legacy, "SOURCE", src)
    monkeypatch.setattr(legacy, "PIN", pin)
    r = run("lab", "info")
    assert "left by an older bin/setup" in r.output and f"rm {src} {pin}" in r.output
    from toolkit import doctor
    c = doctor.leftovers_check()
    assert c.status == doctor.WARN and str(src) in c.detail and "removes nothing" in c.fix
    assert src.exists() and pin.exists()
