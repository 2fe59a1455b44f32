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
    subprocess.run(["sh", "-n", "-c", s], check=True, timeout=30)  # valid POSIX shell


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


def make_entry(cache, release, line, stamp=True):
    """A small cache entry of `release` (image, modules.dep, headers, build link) as
    kfetch leaves it: manifest and stamp included unless stamp=False."""
    from toolkit import kcache, kfetch
    root = cache / "kernels" / release
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"MZ kernel " + release.encode())
    mods = root / "lib" / "modules" / release
    (mods / "kernel").mkdir(parents=True)
    (mods / "kernel" / "virtio.ko").write_bytes(b"\x7fELF module")
    (mods / "modules.dep").write_text("kernel/virtio.ko:\n")
    hdr = root / "usr" / "src" / f"linux-headers-{release}"
    hdr.mkdir(parents=True)
    (hdr / "Makefile").write_text("include /usr/src/linux-headers-common/Makefile\n")
    (mods / "build").symlink_to(hdr)
    if stamp:
        kfetch._stamp(root, root, kcache.lines()[line], release, [], 0.0)
    return root


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A lab kernel cache with Debian's two lab lines (and a 6.12 whose fetch was
    interrupted: no completion stamp)."""
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TOOLKIT_LAB_KERNEL", raising=False)
    monkeypatch.delenv("TOOLKIT_LAB_LINES", raising=False)
    for rel, line, complete in (("6.1.0-56-amd64", "6.1", True), ("6.1.0-41-amd64", "6.1", True),
                                ("6.12.95+deb12-amd64", "6.12", True),
                                ("6.12.99+deb12-amd64", "6.12", False)):
        make_entry(tmp_path, rel, line, stamp=complete)
    return tmp_path


def test_default_lab_kernel_is_the_newest_6_1_of_the_cache(fake_cache):
    k = lab.find_kernel()
    assert k == fake_cache / "kernels" / "6.1.0-56-amd64" / "boot" / "vmlinuz-6.1.0-56-amd64"


@pytest.mark.parametrize("spec, want", [("6.12", "6.12.95+deb12-amd64"),
                                        ("6.1", "6.1.0-56-amd64"),
                                        ("6.1.0-41", "6.1.0-41-amd64"),
                                        ("6", "6.12.95+deb12-amd64")])
def test_release_prefix_picks_the_newest_intact_match(fake_cache, spec, want):
    # "6.1" stops at a version boundary: it never picks 6.12; 6.12.99 is partial
    assert lab.find_kernel(spec).name == f"vmlinuz-{want}"


def test_prefix_from_the_environment(fake_cache, monkeypatch):
    monkeypatch.setenv("TOOLKIT_LAB_KERNEL", "6.12")
    assert lab.find_kernel().name == "vmlinuz-6.12.95+deb12-amd64"


def test_path_is_taken_as_given(fake_cache):
    k = fake_cache / "kernels" / "6.12.99+deb12-amd64" / "boot" / "vmlinuz-6.12.99+deb12-amd64"
    assert lab.find_kernel(str(k)) == k


@pytest.mark.parametrize("spec, msg", [("5.10", "no lab kernel matches '5.10'"),
                                       ("6.12.99", "is partial .* never booted")])
def test_unknown_or_partial_kernel_is_a_clear_error(fake_cache, spec, msg):
    with pytest.raises(lab.LabError, match=msg) as e:
        lab.find_kernel(spec)
    assert "toolkit lab kernels fetch" in e.value.hint


def test_lab_kernels_lists_every_entry_oldest_first(fake_cache):
    ks = lab.lab_kernels()
    assert [k["release"] for k in ks] == ["6.1.0-41-amd64", "6.1.0-56-amd64",
                                         "6.12.95+deb12-amd64", "6.12.99+deb12-amd64"]
    assert [k["status"] for k in ks] == ["ok", "ok", "ok", "partial"]
    assert [k["headers"] for k in ks] == [True, True, True, False]
    assert [k["line"] for k in ks] == ["6.1", "6.1", "6.12", None]
    assert lab.has_headers("6.1.0-56-amd64") and not lab.has_headers("6.12.99+deb12-amd64")


def test_empty_cache_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TOOLKIT_LAB_KERNEL", raising=False)
    with pytest.raises(lab.LabError, match="no lab kernel in the cache") as e:
        lab.find_kernel()
    assert "bin/setup" in e.value.hint


def test_a_cache_the_guest_cannot_see_is_refused(tmp_path, monkeypatch):
    """virtme-ng mounts tmpfs over /tmp, /var/cache... in the guest: a cache there would
    boot a kernel without its modules."""
    assert str(tmp_path).startswith("/tmp/")
    make_entry(tmp_path, "6.1.0-56-amd64", "6.1")
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TOOLKIT_LAB_KERNEL", raising=False)
    with pytest.raises(lab.LabError, match="hides in the guest"):
        lab.run(["true"])


def test_tcg_threads_multi_only_on_verified_lines(monkeypatch, tmp_path):
    """6.12 under multi-threaded TCG jumps to address 0 when ftrace call sites are switched
    off, and 6.1 hung once under it (toolkit/lab.py): no line keeps QEMU's default MTTCG
    unless TOOLKIT_LAB_TCG=multi asks for it."""
    monkeypatch.delenv(lab.TCG_ENV, raising=False)
    assert lab.MTTCG_VERIFIED == ()
    assert lab.tcg_threads("6.1.0-56-amd64") == "single"
    assert lab.tcg_threads("6.12.95+deb12-amd64") == "single"
    assert lab.tcg_threads("not-a-release") == "single"
    monkeypatch.setenv(lab.TCG_ENV, "multi")
    assert lab.tcg_threads("6.12.95+deb12-amd64") == "multi"
    monkeypatch.setenv(lab.TCG_ENV, "bogus")
    with pytest.raises(lab.LabError):
        lab.tcg_threads("6.1.0-56-amd64")
    monkeypatch.delenv(lab.TCG_ENV)
    k612 = tmp_path / "vmlinuz-6.12.95+deb12-amd64"
    argv = lab.build_command(tmp_path / "g.sh", kernel=k612, accel=lab.Accel("tcg", "t"),
                             cpus=2, memory="1G", rwdirs=[])
    assert "--qemu-opts=-accel tcg,thread=single" in argv
    monkeypatch.setenv(lab.TCG_ENV, "multi")
    argv = lab.build_command(tmp_path / "g.sh", kernel=tmp_path / "vmlinuz-6.1.0-56-amd64",
                             accel=lab.Accel("tcg", "t"), cpus=2, memory="1G", rwdirs=[])
    assert not any("thread=single" in a for a in argv)
