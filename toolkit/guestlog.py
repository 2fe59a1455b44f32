"""What the lab guest's kernel says when it dies: the boot arguments that make a fault end
the guest, and the reading of its captured console afterwards (docs/testing.md).

The guest boots with a virtio console written by QEMU straight to a host file (hvc0, at
loglevel 7): a panic is printed there before QEMU exits, whatever state the
guest's user space is in, where the streamed kernel log (`cat /dev/kmsg` in the guest)
stops earlier. After an abnormal end, `diagnose()` reads that file: a kernel panic, oops,
BUG, warning, soft lockup or hung task, with the lines that say so.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

PANIC_ON_WARN_ENV = "TOOLKIT_LAB_PANIC_ON_WARN"
# A task blocked for this long panics the guest (hung_task_panic). Natively 120 s is the
# default; under TCG on a loaded 2-core host, I/O through 9p can stall for tens of seconds,
# so 240 s; the detector checks every period, so a hang is caught within 240-480 s, before
# the host's silence watchdog (TOOLKIT_LAB_SILENCE, 720 s).
HUNG_TASK_SECS = 240
# Soft lockup after 2 x watchdog_thresh s without scheduling (default 10: 20 s). A vCPU
# descheduled on a loaded host looks the same to the guest under TCG, so 30 (60 s).
WATCHDOG_THRESH = 30
# The captured console is a virtio console (hvc0), not a second serial port: virtme-ng's
# console=ttyS0 (to /dev/null) holds the 8250 driver's one console, so console=ttyS1 is
# ignored (tried: an empty file). hvc is another driver, so both are enabled; it replays
# the log from the start when it registers (6.1 loads virtio_console as a module, 6.12 has
# it built in), and writes synchronously, so a panic's text reaches QEMU before it exits.
CONSOLE_TTY = "hvc0"


def console_qemu_args(path: Path) -> list[str]:
    """QEMU options for the captured console: a virtio-serial device of its own (virtme-ng
    uses the q35 machine here: PCI) with one virtconsole port written to `path`."""
    p = str(path).replace(",", ",,")       # QEMU's option syntax doubles commas
    return ["-chardev", f"file,id=tkconsole,path={p}",
            "-device", "virtio-serial-pci,id=tkserial",
            "-device", "virtconsole,chardev=tkconsole,bus=tkserial.0"]


def fault_args() -> list[str]:
    """Kernel arguments that turn every kernel fault into a panic (virtme-ng already
    passes panic=-1 and QEMU -no-reboot: a panic ends the VM at once), and send the
    kernel's messages to the captured console."""
    args = ["panic_on_oops=1", "softlockup_panic=1", f"watchdog_thresh={WATCHDOG_THRESH}",
            "hung_task_panic=1", f"hung_task_timeout_secs={HUNG_TASK_SECS}",
            f"console={CONSOLE_TTY}", "loglevel=7"]
    if os.environ.get(PANIC_ON_WARN_ENV, "") not in ("", "0"):
        args.append("panic_on_warn=1")
    return args


# what the kernel prints on a fault (the first one is the headline); and on a hang
_FAULT = re.compile(r"BUG: |Oops: |general protection fault|kernel BUG at|WARNING: CPU: "
                    r"|INFO: task .* blocked for more than|INFO: rcu_\w+ (self-)?detected stall")
_HANG = re.compile(r"soft lockup|blocked for more than|not syncing: hung_task|"
                   r"not syncing: softlockup|detected stall")
_PANIC = re.compile(r"Kernel panic - not syncing")


@dataclasses.dataclass
class Fault:
    kind: str          # "crashed" or "hung"
    headline: str      # the kernel's own line that says so (its first fault line)
    panicked: bool     # the guest panicked (else: a fault it survived, e.g. a warning)
    tail: list[str]    # the kernel's messages from the fault on


def _clean(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.replace("\0", "").splitlines()]


def diagnose(console: Path, tail: int = 40) -> Fault | None:
    """The kernel fault the console shows (None: none, or no console)."""
    try:
        lines = _clean(console.read_text(errors="replace"))
    except OSError:
        return None
    return diagnose_lines(lines, tail)


def diagnose_lines(lines: list[str], tail: int = 40) -> Fault | None:
    panic = next((i for i, line in enumerate(lines) if _PANIC.search(line)), None)
    fault = next((i for i, line in enumerate(lines) if _FAULT.search(line)), None)
    if panic is None and fault is None:
        return None
    first = min(i for i in (panic, fault) if i is not None)
    upto = len(lines) if panic is None else panic + 1
    kind = "hung" if any(_HANG.search(line) for line in lines[first:upto]) else "crashed"
    headline = re.sub(r"^\[\s*[\d.]+\]\s*", "", lines[first]).strip()
    # from a little before the first fault line to the end; a long one keeps its start
    # (the fault and its trace) and its last 10 lines (the panic)
    seg = lines[max(first - 5, 0):]
    if len(seg) > tail:
        seg = seg[:tail - 11] + ["[...]"] + seg[-10:]
    return Fault(kind, headline, panic is not None, seg)


def kmsg_tail(path: Path, n: int = 30) -> list[str]:
    """The last `n` messages of a /dev/kmsg capture ("prio,seq,ts,flags;text" lines)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(";", 1)[-1] for line in text.splitlines()
            if line and not line.startswith(" ")][-n:]
