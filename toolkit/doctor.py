"""toolkit doctor: what each backend needs from the running kernel, and whether it is there.

Every check reads the kernel's own interfaces (/proc, /sys); nothing is assumed from the
distribution. A verdict per backend follows: native (runs here), lab (runs in the lab
VM), or unavailable, with the fix for each missing piece.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

from . import schema, sysinfo
from .sysinfo import cap_effective, kallsyms_has, kernel_config

OK, MISSING, WARN = "ok", "MISSING", "warn"

# capability bit numbers (linux/capability.h)
CAPS = {"CAP_SYS_ADMIN": 21, "CAP_SYS_MODULE": 16, "CAP_BPF": 39, "CAP_PERFMON": 38}


@dataclasses.dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    needed_by: tuple[str, ...] = ()


def bcc_status() -> tuple[bool, str]:
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc)
    except Exception as e:  # ImportError, or bcc failing to load libbcc
        return False, f"{type(e).__name__}: {e}"
    return True, f"bcc {getattr(bcc, '__version__', '?')} from {Path(bcc.__file__).parent}"


def checks(mount: bool = True) -> list[Check]:
    """Every check, in the order doctor prints them (mount: try to mount tracefs)."""
    rel = sysinfo.release()
    cfg = kernel_config()
    root = os.geteuid() == 0
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    out = [root_check(root), capabilities_check(), modules_check(), *kprobe_checks(cfg),
           headers_check(rel), btf_check(btf), tracefs_check(mount), bpf_stats_check(),
           ringbuf_check(rel), bcc_check(), *lockdown_checks()]
    out += interface_checks(cfg)
    out += peer_checks(cfg, btf)
    out.append(leftovers_check())
    if btf and root:
        out += core_checks()
    return with_needs(out)


def with_needs(items: list[Check]) -> list[Check]:
    """Fill each check's needed_by from what the backends declare (doctor_needs)."""
    from .backends.base import doctor_subjects, subject_class
    needs = {s: subject_class(s).doctor_needs for s in doctor_subjects()}
    for c in items:
        c.needed_by = tuple(s for s, n in needs.items() if c.name in n)
    return items


def root_check(root: bool) -> Check:
    return Check("root", OK if root else MISSING, f"euid {os.geteuid()}",
                 "run as root (sudo)")


def capabilities_check() -> Check:
    caps = cap_effective()
    have = [n for n, bit in CAPS.items() if caps >> bit & 1]
    lacking = [n for n in CAPS if n not in have]
    return Check("capabilities", OK if not lacking else MISSING,
                 ", ".join(have) if not lacking else f"lacking {', '.join(lacking)}",
                 "run as root outside a restricted container")


def modules_check() -> Check:
    """Loadable modules: built in, and loading not switched off."""
    modules = Path("/proc/modules").exists()
    disabled = (sysinfo.read_text("/proc/sys/kernel/modules_disabled") or "0").strip() == "1"
    if not modules:
        return Check("loadable modules", MISSING, "kernel built without CONFIG_MODULES "
                     "(/proc/modules absent)", "use a kernel with module support, or --lab")
    if disabled:
        return Check("loadable modules", MISSING, "kernel.modules_disabled=1",
                     "reboot (the setting is one-way), or --lab")
    return Check("loadable modules", OK, "CONFIG_MODULES, loading enabled")


def kprobe_checks(cfg: dict[str, str]) -> list[Check]:
    """kprobes, and the hook symbols in kallsyms (when kallsyms is readable)."""
    hook_syms = list(schema.HOOK_SYMBOLS.values())
    syms = kallsyms_has("register_kprobe", *hook_syms)
    kprobes = syms["register_kprobe"] or cfg.get("CONFIG_KPROBES") == "y"
    readable = any(syms.values())
    detail = ("register_kprobe in /proc/kallsyms" if syms["register_kprobe"] else
              "CONFIG_KPROBES=y in kernel config" if kprobes else
              "no register_kprobe in /proc/kallsyms" if readable else
              "cannot tell (kallsyms unreadable, no kernel config)")
    out = [Check("kprobes", OK if kprobes else MISSING, detail,
                 "use a kernel with CONFIG_KPROBES=y, or --lab")]
    hooks = [s for s in hook_syms if not syms[s]]
    if readable:
        out.append(Check("hook symbols", OK if not hooks else MISSING,
                         ", ".join(hook_syms) if not hooks else
                         f"not in kallsyms: {', '.join(hooks)}", "--lab"))
    return out


def btf_check(btf: bool) -> Check:
    return Check("BTF", OK if btf else MISSING, "/sys/kernel/btf/vmlinux" +
                 ("" if btf else " missing (no CO-RE engine, no fentry variant)"),
                 "a kernel with CONFIG_DEBUG_INFO_BTF=y, or --engine bcc")


def tracefs_check(mount: bool) -> Check:
    """tracefs, mounted here (mount) or mountable: the backends that need it mount it
    when they start (sysinfo.mount_tracefs)."""
    err = sysinfo.mount_tracefs() if mount else None
    tdir = sysinfo.tracefs_dir()
    if tdir:
        return Check("tracefs", OK, str(tdir))
    if not mount and sysinfo.tracefs_mountable():
        return Check("tracefs", OK, f"not mounted; {sysinfo.TRACEFS} is mounted by the "
                     "backend that needs it when it starts")
    return Check("tracefs", MISSING, f"not mounted ({err or 'not tried'})",
                 f"mount -t tracefs nodev {sysinfo.TRACEFS}")


def bpf_stats_check() -> Check:
    bpf_stats = Path("/proc/sys/kernel/bpf_stats_enabled").exists()
    return Check("bpf() and bpf_stats", OK if bpf_stats else MISSING,
                 "kernel.bpf_stats_enabled present" if bpf_stats else
                 "no /proc/sys/kernel/bpf_stats_enabled (CONFIG_BPF_SYSCALL?)",
                 "a kernel with CONFIG_BPF_SYSCALL=y, or --lab")


def ringbuf_check(rel: str) -> Check:
    major, minor = sysinfo.kernel_version(rel)
    ringbuf = (major, minor) >= (5, 8)
    return Check("BPF ring buffer", OK if ringbuf else WARN,
                 f"kernel {major}.{minor} " + (">= 5.8" if ringbuf else "< 5.8: perf buffer"))


def bcc_check() -> Check:
    ok, detail = bcc_status()
    return Check("bcc (python3-bpfcc)", OK if ok else MISSING, detail,
                 "apt-get install python3-bpfcc bpfcc-tools, and run the toolkit from a "
                 "venv with system site packages (bin/setup does both)")


def lockdown_checks() -> list[Check]:
    """Lockdown and module signing (the module), and lockdown's confidentiality mode
    (BPF's probe reads)."""
    lock = sysinfo.read_text("/sys/kernel/security/lockdown")
    mode = lock.split("[", 1)[1].split("]", 1)[0] if lock and "[" in lock else "none"
    sig = (sysinfo.read_text("/sys/module/module/parameters/sig_enforce") or "N").strip()
    sb = any(Path("/sys/firmware/efi/efivars").glob("SecureBoot-*")) and _secure_boot_on()
    state = f"sig_enforce={sig}, Secure Boot={'on' if sb else 'off'}"
    if mode != "none" or sig == "Y":
        out = [Check("lockdown / module signing", MISSING, f"lockdown={mode}, {state}",
                     "sign the module with an enrolled key (MOK) or use --lab")]
    else:
        out = [Check("lockdown / module signing", OK, f"lockdown=none, {state}")]
    if mode == "confidentiality":
        out.append(Check("lockdown (BPF)", MISSING, "confidentiality mode blocks bpf_probe_read",
                         "--lab"))
    return out


def core_attach_kinds() -> dict[str, str]:
    """Which attach kinds this kernel accepts, found by loading and attaching a trivial
    program of each kind (ebpf/core/probe.bpf.o) alone: kind -> "ok" or the reason."""
    from .backends import libbpf
    from .backends.ebpf_core import BUILD_DIR
    out = {}
    for kind in ("kprobe", "fentry", "tp_btf", "raw_tp", "iter_task"):
        try:
            obj = libbpf.Object(str(BUILD_DIR / "probe.bpf.o"))
        except libbpf.LibbpfError as e:
            return {"all": str(e).splitlines()[0]}
        try:
            for prog in obj.programs():
                prog.set_autoload(prog.name == f"probe_{kind}")
            obj.load()
            link = obj.program(f"probe_{kind}")
            if kind != "iter_task":
                link.attach().destroy()
            out[kind] = "ok"
        except libbpf.LibbpfError as e:
            out[kind] = str(e).splitlines()[0]
        finally:
            obj.close()
    return out


def core_checks() -> list[Check]:
    """The CO-RE engine's needs: libbpf, the built objects, and an attach kind that loads."""
    from .backends import libbpf
    from .backends.ebpf_core import BUILD_HINT, LIFECYCLE_OBJ
    out = []
    try:
        libbpf.lib()
        out.append(Check("libbpf", OK, libbpf.LIBBPF))
    except libbpf.LibbpfError as e:
        return [Check("libbpf", MISSING, str(e), "apt-get install libbpf1")]
    built = LIFECYCLE_OBJ.exists()
    out.append(Check("CO-RE objects", OK if built else MISSING,
                     str(LIFECYCLE_OBJ.parent) + ("" if built else " not built"), BUILD_HINT))
    if not built:
        return out
    kinds = core_attach_kinds()
    good = [k for k, v in kinds.items() if v == "ok"]
    lifecycle = [k for k in good if k != "iter_task"]
    detail = "; ".join(f"{k} {'ok' if v == 'ok' else 'refused: ' + v}" for k, v in kinds.items())
    out.append(Check("attach kinds (CO-RE)", OK if lifecycle else MISSING, detail,
                     "a kernel that loads tp_btf, raw_tp, kprobe or fentry programs"))
    out.append(core_quota_check(kinds))
    if "iter_task" in good:     # inspect --engine core: one read of this process
        from .backends.ebpf_vm import core_inspect_summary
        works, detail = core_inspect_summary(os.getpid())
        out.append(Check("inspect (CO-RE)", OK if works else MISSING, detail,
                         "" if works else "inspect with --engine bcc, or --backend lkm"))
    return out


def core_quota_check(kinds: dict[str, str]) -> Check:
    """Which quota hook set the CO-RE quota programs take on this kernel (kprobes where
    it has them, else raw tracepoints) and what each quota kind is checked by there;
    whether quotas are pinned now."""
    from .backends import quota_pins
    from .backends.quotas import coverage
    hooks = "kprobe" if kinds.get("kprobe") == "ok" else \
        "tracepoint" if kinds.get("raw_tp") == "ok" else None
    if hooks is None:
        return Check("quotas (CO-RE)", MISSING, "neither kprobes nor raw tracepoints attach: "
                     "no quota can be enforced")
    cov = coverage(hooks)
    pinned = "pinned now under " + str(quota_pins.PIN_DIR) if quota_pins.is_pinned() \
        else "none pinned"
    return Check("quotas (CO-RE)", OK, f"{hooks} hooks; heap: {cov['heap']}; files: "
                 f"{cov['files']}; {pinned}")


# The kernel's own process-event interfaces: a config option each, checked from the
# kernel config when it is readable (else assumed and left to the backend's start()).
INTERFACES = (
    ("proc connector", ("CONFIG_CONNECTOR", "CONFIG_PROC_EVENTS")),
    ("taskstats", ("CONFIG_TASKSTATS",)),
    ("BSD process accounting v3", ("CONFIG_BSD_PROCESS_ACCT", "CONFIG_BSD_PROCESS_ACCT_V3")),
    ("audit syscall rules", ("CONFIG_AUDIT", "CONFIG_AUDITSYSCALL")),
)


def interface_checks(cfg: dict[str, str]) -> list[Check]:
    out = []
    for name, options in INTERFACES:
        if not cfg:
            out.append(Check(name, WARN, "kernel config unreadable: assumed, the backend "
                             "says at start if it is not there"))
            continue
        lacking = [o for o in options if cfg.get(o) != "y"]
        out.append(Check(name, OK if not lacking else MISSING,
                         ", ".join(f"{o}=y" for o in options) if not lacking else
                         f"not set: {', '.join(lacking)}",
                         f"a kernel with {', '.join(lacking)}=y, or --lab"))
    return out


# The tools users run instead (toolkit/backends/peers): the binary each needs, from
# which Debian package (bin/setup installs them); the check is "<peer> installed".
PEER_TOOLS = (("auditd", ("auditd", "auditctl"), "auditd"),
              ("bpftrace", ("bpftrace",), "bpftrace"),
              ("forkstat", ("forkstat",), "forkstat"),
              ("execsnoop", ("execsnoop-bpfcc",), "bpfcc-tools"),
              ("exitsnoop", ("exitsnoop-bpfcc",), "bpfcc-tools"))


def peer_checks(cfg: dict[str, str], btf: bool) -> list[Check]:
    import shutil
    out = []
    for backend, tools, package in PEER_TOOLS:
        lacking = [t for t in tools if shutil.which(t) is None]
        out.append(Check(f"{backend} installed", OK if not lacking else MISSING,
                         ", ".join(shutil.which(t) or t for t in tools) if not lacking
                         else f"not found: {', '.join(lacking)}",
                         f"apt-get install {package} (bin/setup installs it)"))
    out.append(Check("BTF for bpftrace", OK if btf else MISSING,
                     "curtask->exit_code is read through BTF (sched_process_exit has no "
                     "exit code)" + ("" if btf else ": /sys/kernel/btf/vmlinux missing"),
                     "a kernel with CONFIG_DEBUG_INFO_BTF=y, or --lab"))
    return out


def _secure_boot_on() -> bool:
    for f in Path("/sys/firmware/efi/efivars").glob("SecureBoot-*"):
        try:
            return f.read_bytes()[-1] == 1
        except OSError:
            return False
    return False


def headers_check(rel: str) -> Check:
    """The running kernel's headers: the only ones of use natively (the module and BCC
    compile against the running release's; another release's headers are useless)."""
    build = Path("/lib/modules") / rel / "build"
    if (build / "Makefile").exists():
        return Check("kernel headers", OK, str(build))
    pkg = f"linux-headers-{rel}"
    if _apt_has(pkg):
        return Check("kernel headers", MISSING, f"{build} missing",
                     f"apt-get install {pkg} (bin/setup does), or --lab")
    return Check("kernel headers", MISSING,
                 f"{build} missing, and the distribution has no {pkg}: headers for another "
                 "release are useless (the module and BCC build against the running kernel's)",
                 "the kernel's vendor's headers package for exactly this release, or --lab")


def _apt_has(pkg: str) -> bool:
    try:
        p = subprocess.run(["apt-cache", "show", "--no-all-versions", pkg],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and bool(p.stdout.strip())


def leftovers_check() -> Check:
    """What older bin/setup versions installed (toolkit.legacy): said, never removed."""
    from . import legacy
    found = legacy.findings()
    if not found:
        return Check("old set-up leftovers", OK, "no backports source, pin or kernel package "
                     "of an older bin/setup")
    return Check("old set-up leftovers", WARN,
                 "; ".join(f"{f['what']}: {', '.join(f['items'])}" for f in found),
                 "; ".join(f["remove"] for f in found if f.get("remove")) +
                 " (toolkit removes nothing itself)")


def lab_check() -> Check:
    from . import lab
    i = lab.info()
    if i.get("usable"):
        acc = i.get("accel") or {}
        return Check("lab VM", OK, f"{i['release']} via virtme-ng, "
                     f"{(acc.get('name') or '?').upper()} ({acc.get('reason', '')})")
    missing = [w for w, ok in (("virtme-ng", i.get("vng")), ("qemu", i.get("qemu")),
                               ("kernel+headers", i.get("headers"))) if not ok]
    return Check("lab VM", MISSING, i.get("error") or f"missing {', '.join(missing)}",
                 lab.SETUP_HINT)


def verdict(subject: str, items: list[Check], lab_ok: bool) -> tuple[str, list[str]]:
    """native / lab / unavailable for a doctor subject (a backend, or one engine of a
    backend with engines: base.doctor_subject), and the fixes for what is missing. A
    backend with engines gets the best of its engines' verdicts; a backend that
    declares no lab fallback is unavailable, not lab, where something is missing."""
    from .backends.base import engine_subjects, subject_class
    if engine_subjects(subject):
        results = [verdict(s, items, lab_ok) for s in engine_subjects(subject)]
        order = ("native", "lab", "unavailable")
        best = min(results, key=lambda r: order.index(r[0]))
        return best[0], [] if best[0] == "native" else sum((f for _, f in results), [])
    cls = subject_class(subject)
    missing = [c for c in items if c.name in cls.doctor_needs and c.status == MISSING]
    if missing and not cls.doctor_lab_fallback:
        return "unavailable", [f"{c.name}: {c.fix}" for c in missing]
    if not missing:
        return "native", []
    fixes = [f"{c.name}: {c.fix}" for c in missing]
    return ("lab" if lab_ok else "unavailable"), fixes
