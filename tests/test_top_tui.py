"""toolkit top's full-screen mode in a real terminal: tmux (an 80x24 detached session),
keys with send-keys, the screen with capture-pane; natively with the ps backend, with
the CO-RE engine natively and in the lab, and with the module and BCC in the lab."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed "
                                "(bin/setup installs it)")
TOOLKIT = Path(sys.executable).parent / "toolkit"


class Tmux:
    def __init__(self, name):
        self.sock = f"tk-top-{name}-{os.getpid()}"
        self("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "bash --norc --noprofile")
        self.keys("PS1='PROMPT$ '", "Enter")

    def __call__(self, *args):
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def keys(self, *keys):
        self("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, pred, what, timeout=20.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s = self.screen()
            if pred(s):
                return s
            time.sleep(0.2)
        raise AssertionError(f"screen never showed {what}:\n{s}")

    def kill(self):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True,
                       timeout=30)


@pytest.fixture
def tmux(request):
    t = Tmux(request.node.name[-20:].replace("[", "").replace("]", ""))
    yield t
    t.kill()


def table_header(screen: str) -> str:
    return next(line for line in screen.splitlines() if line.lstrip().startswith("pid"))


def start_top(t):
    t.keys(f"{TOOLKIT} top --backend ps --interval 0.5; echo rc=$?", "Enter")
    return t.wait_for(lambda s: "toolkit top" in s and "cpu%" in s, "the dashboard")


def prompt_works(t, tag):
    t.keys(f"echo back-{tag} $((6*7))", "Enter")
    s = t.wait_for(lambda s: f"back-{tag} 42" in s, "the shell's answer")
    t.keys("stty -a", "Enter")
    s = t.wait_for(lambda s: "icanon" in s and s.rstrip().endswith("PROMPT$"), "stty")
    assert " -icanon" not in s and " -echo " not in s, "terminal left in cbreak/noecho"
    return s


def test_keys_resize_and_q(tmux):
    s = start_top(tmux)
    assert "backend ps" in s and "mem" in s and "polling cannot see them" in s
    assert "cpu%v" in table_header(s)                   # sorted by CPU by default
    assert len(s.splitlines()) <= 24 and all(len(line) <= 80 for line in s.splitlines())
    tmux.keys("m")
    s = tmux.wait_for(lambda s: "rssv" in table_header(s), "the rss sort")
    assert "sort rss" in s
    tmux.keys("p")
    s = tmux.wait_for(lambda s: "pidv" in table_header(s), "the pid sort")
    rows = [line.split() for line in s.splitlines()[s.splitlines().index(table_header(s)) + 1:]
            if line.split() and line.split()[0].isdigit()]
    pids = [int(r[0]) for r in rows]
    assert len(pids) > 3 and pids == sorted(pids)
    tmux("resize-window", "-t", "t", "-x", "100", "-y", "30")
    s = tmux.wait_for(lambda s: len(s.splitlines()) == 30 and
                      any(len(line.rstrip()) > 80 for line in s.splitlines()), "100x30")
    assert "pidv" in table_header(s) and "q quit" in s
    tmux("resize-window", "-t", "t", "-x", "80", "-y", "24")
    s = tmux.wait_for(lambda s: "q quit" in s and
                      all(len(line.rstrip()) <= 80 for line in s.splitlines()), "80x24 again")
    tmux.keys("u", "9", "9", "9", "9", "9", "Enter")     # a uid nobody has: empty table
    s = tmux.wait_for(lambda s: "uid 99999" in s.splitlines()[0], "the uid filter")
    s = tmux.wait_for(lambda s: not any(
        line.split() and line.split()[0].isdigit() and "mem" not in line
        for line in s.splitlines()[s.splitlines().index(table_header(s)) + 1:]), "no rows")
    tmux.keys(" ")
    tmux.wait_for(lambda s: "PAUSED" in s, "paused")
    tmux.keys("q")
    tmux.wait_for(lambda s: "rc=0" in s, "exit status 0 after q")
    prompt_works(tmux, "q")


def test_ctrl_c_restores_terminal(tmux):
    start_top(tmux)
    tmux.keys("C-c")
    s = tmux.wait_for(lambda s: "rc=" in s, "the exit status after Ctrl-C")
    assert "Traceback" not in s
    prompt_works(tmux, "c")


@pytest.mark.core
def test_full_screen_on_the_core_engine(tmux):
    """The dashboard over the CO-RE engine (natively: the lifecycle stream and the task
    iterator): the title names the engine, a burst of forks shows in the counters, the
    sort keys and q work."""
    from toolkit.backends import engines
    why = engines.core_blocker() or (None if os.geteuid() == 0 else "not root")
    if why:
        pytest.skip(f"the CO-RE engine cannot run here: {why}")
    tmux.keys(f"{TOOLKIT} top --backend ebpf --engine core --interval 0.5; echo rc=$?",
              "Enter")
    slow = 6 if os.environ.get("TOOLKIT_IN_LAB") == "1" else 1     # TCG: start-up is slow
    s = tmux.wait_for(lambda s: "toolkit top" in s and "cpu%" in s, "the dashboard",
                      20 * slow)
    assert "ebpf-core" in s
    for _ in range(20):
        subprocess.run(["/bin/true"], timeout=10)
    tmux.wait_for(lambda s: "fork" in s and "exit" in s, "the lifecycle counters", 20 * slow)
    tmux.keys("m")
    tmux.wait_for(lambda s: "rssv" in table_header(s), "the rss sort", 20 * slow)
    tmux.keys("q")
    tmux.wait_for(lambda s: "rc=0" in s, "exit status 0 after q", 20 * slow)
    prompt_works(tmux, "core")



@pytest.mark.kernel
@pytest.mark.parametrize("argv,title,start_s", [
    ("--backend lkm", "backend lkm", 120),
    # a BCC compile first: 40-90 s under TCG
    ("--backend ebpf --engine bcc", "backend ebpf", 300),
], ids=["lkm", "ebpf-bcc"])
def test_full_screen_on_the_kernel_backends(tmux, argv, title, start_s):
    """The dashboard over the kprobe module and over BCC, in the lab: the title names the
    backend, a burst of forks shows in the counters, the rss and pid sorts and q work,
    the terminal is given back."""
    import sys as _sys
    _sys.path.insert(0, str(Path(__file__).parent / "kernel"))
    from test_lkm import ensure_loaded
    if "lkm" in argv:
        ensure_loaded(ring_size=16384, proc_gid=-1)
    tmux.keys(f"{TOOLKIT} top {argv} --interval 0.5; echo rc=$?", "Enter")
    s = tmux.wait_for(lambda s: "toolkit top" in s and "cpu%" in s, "the dashboard",
                      start_s)
    assert title in s and "ebpf-core" not in s, s
    for _ in range(20):
        subprocess.run(["/bin/true"], timeout=10)
    tmux.wait_for(lambda s: "fork" in s and "exit" in s, "the lifecycle counters", 60)
    tmux.keys("m")
    tmux.wait_for(lambda s: "rssv" in table_header(s), "the rss sort", 60)
    tmux.keys("p")
    s = tmux.wait_for(lambda s: "pidv" in table_header(s), "the pid sort", 60)
    rows = [line.split() for line in s.splitlines()[s.splitlines().index(table_header(s)) + 1:]
            if line.split() and line.split()[0].isdigit()]
    assert len(rows) > 3 and [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)
    tmux.keys("q")
    tmux.wait_for(lambda s: "rc=0" in s, "exit status 0 after q", 60)
    prompt_works(tmux, argv.split()[1])
