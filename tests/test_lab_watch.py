"""The lab's bounds, natively: the boot arguments that make a guest kernel fault end the
VM, the console captured to a file, and the silence watchdog on a real child process."""
import shlex
import sys
import time
from pathlib import Path

import pytest

from toolkit import guestlog, lab


def test_vng_command_panics_on_faults_and_captures_the_console(tmp_path, monkeypatch):
    monkeypatch.delenv(guestlog.PANIC_ON_WARN_ENV, raising=False)
    monkeypatch.delenv(lab.TCG_ENV, raising=False)
    console = tmp_path / "run 1.console"
    kernel = tmp_path / "vmlinuz-6.12.95+deb12-amd64"
    argv = lab.build_command(tmp_path / "guest.sh", kernel=kernel,
                             accel=lab.Accel("tcg", "test"), cpus=2, memory="1G",
                             rwdirs=[tmp_path], console=console)
    kargs = argv[argv.index("--append") + 1].split()
    for a in ("panic_on_oops=1", "softlockup_panic=1", "hung_task_panic=1",
              f"hung_task_timeout_secs={guestlog.HUNG_TASK_SECS}", "console=hvc0"):
        assert a in kargs, kargs
    assert "panic_on_warn=1" not in kargs
    qemu = [a for a in argv if a.startswith("--qemu-opts=")]
    assert len(qemu) == 1       # vng keeps one; it hands it to a shell
    assert shlex.split(qemu[0].removeprefix("--qemu-opts=")) == \
        ["-accel", "tcg,thread=single", *guestlog.console_qemu_args(console)]
    assert f"path={console}" in guestlog.console_qemu_args(console)[1]
    assert "path=/a,,b" in guestlog.console_qemu_args(Path("/a,b"))[1]
    monkeypatch.setenv(guestlog.PANIC_ON_WARN_ENV, "1")
    assert "panic_on_warn=1" in guestlog.fault_args()


def boot(tmp_path, script, silence, timeout=None, files=()):
    seen = lab._Activity([tmp_path / f for f in files])
    t0 = time.monotonic()
    status, ended = lab._boot(["/bin/sh", "-c", script], "6.1.0-56-amd64",
                              lab.Accel("kvm", "test"), 1, "1G", tmp_path, timeout, True,
                              seen, silence)
    return status, ended, time.monotonic() - t0, seen


def test_silent_guest_is_killed_with_what_it_printed_last(tmp_path):
    status, ended, took, seen = boot(tmp_path, "echo started; echo last words; sleep 60", 2)
    assert (status, ended) == (124, "silence")
    assert 2 <= took < 10
    assert seen.last_lines(1) == ["last words"]


def test_a_growing_log_file_is_not_silence(tmp_path):
    # nothing on stdout for 5 s, but the kernel log file grows every 0.5 s
    script = f"for i in 1 2 3 4 5 6 7 8 9 10; do echo x >> {tmp_path}/g.kmsg; sleep 0.5; done"
    status, ended, took, _ = boot(tmp_path, script, 3, files=["g.kmsg"])
    assert (status, ended) == (0, None) and took >= 4.5


def test_overall_timeout_still_applies(tmp_path):
    script = "while :; do echo busy; sleep 0.2; done"
    status, ended, took, _ = boot(tmp_path, script, 30, timeout=3)
    assert (status, ended) == (124, "timeout") and took < 10


def test_silence_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv(lab.SILENCE_ENV, raising=False)
    assert lab.silence_limit() == lab.SILENCE_DEFAULT
    monkeypatch.setenv(lab.SILENCE_ENV, "0")
    assert lab.silence_limit() is None
    monkeypatch.setenv(lab.SILENCE_ENV, "90")
    assert lab.silence_limit() == 90 and lab.silence_limit(5) == 5
    monkeypatch.setenv(lab.SILENCE_ENV, "soon")
    with pytest.raises(lab.LabError, match="TOOLKIT_LAB_SILENCE"):
        lab.silence_limit()


def test_sigterm_kills_the_vm_too(tmp_path):
    """`timeout` around the caller sends SIGTERM to lab run, not to QEMU (a session of its
    own): lab run must kill it."""
    import os
    import signal
    import subprocess
    pidfile = tmp_path / "vm.pid"
    code = ("import sys; from pathlib import Path; from toolkit import lab\n"
            "seen = lab._Activity([])\n"
            f"s = lab._boot(['/bin/sh', '-c', 'echo $$ > {pidfile}; exec sleep 60'], "
            "'6.1.0-56-amd64', lab.Accel('kvm', 't'), 1, '1G', Path('/tmp'), None, True, "
            "seen, None)\n"
            "print(s)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        vm = int(pidfile.read_text())
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    assert out.strip() == "(130, 'interrupted')"
    with pytest.raises(ProcessLookupError):
        os.kill(vm, 0)
