"""The lab runner's pure parts: what runs in the guest and which kernel is chosen."""
import subprocess

import pytest

from toolkit import lab


def test_guest_script_quotes_command_and_sets_env():
    s = lab.guest_script(["python", "-c", "print('a b')"], "/work/x y", {"CI": "true"})
    assert "export CI=true" in s
    assert "cd '/work/x y'" in s
    assert s.rstrip().endswith("""exec python -c 'print('"'"'a b'"'"')'""")
    # BCC needs the build/source links; tracefs for attachment
    assert "/lib/modules/$rel/build" in s and "mount -t tracefs" in s
    subprocess.run(["sh", "-n", "-c", s], check=True)  # valid POSIX shell


def test_guest_env_passes_ci_and_puts_venv_first(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HOME_SECRET", "x")
    env = lab.guest_env()
    assert env["CI"] == "true" and "HOME_SECRET" not in env
    assert env["TOOLKIT_IN_LAB"] == "1" and env["PATH"].split(":")[0].endswith("bin")


def test_explicit_missing_kernel_is_a_clear_error():
    with pytest.raises(lab.LabError, match="does not exist"):
        lab.find_kernel("/boot/vmlinuz-does-not-exist")


def test_no_command_is_an_error():
    with pytest.raises(lab.LabError, match="no command"):
        lab.run([])


@pytest.mark.vm
def test_kvm_probe_answers(monkeypatch):
    a = lab.probe_kvm(lab.find_kernel())
    assert a.name in ("kvm", "tcg") and a.reason


def test_vng_command_line_stays_short_whatever_the_command(tmp_path):
    """virtme-ng puts --exec on the kernel command line (2048 bytes on x86): only a path
    to the guest script may go there."""
    k = lab.find_kernel()
    argv = lab.build_command(tmp_path / "guest.sh", kernel=k, accel=lab.Accel("tcg", "test"),
                             cpus=2, memory="1G", rwdirs=[tmp_path])
    exec_arg = argv[argv.index("--exec") + 1]
    assert exec_arg == f"/bin/sh {tmp_path / 'guest.sh'}"
    assert "--disable-kvm" in argv and str(k) in argv
