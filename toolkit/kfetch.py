"""Fetching a lab kernel into the cache (toolkit.kcache) with apt's own tools.

apt-get runs with a private sources list, lists directory, package cache, preferences
and an empty dpkg status (`Apt.options`): it reads and writes only <cache>/apt/<line>/,
and `apt-get download` fetches exactly the packages named, checked against the signed
index, without installing anything. dpkg-deb then unpacks them into the entry.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import kcache
from .errors import LabError
from .kcache import Entry, Line


def say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"lab kernels: {msg}", file=sys.stderr, flush=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Apt:
    """apt-get and apt-cache confined to <cache>/apt/<line>/."""

    def __init__(self, line: Line):
        self.line = line
        self.dir = kcache.cache_dir() / "apt" / re.sub(r"[^\w.+-]", "_", line.name)

    def prepare(self) -> None:
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d",
                    "preferences.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        srcs = "".join(f"deb [signed-by={self.line.keyring}] {s}\n" for s in self.line.sources)
        (self.dir / "sources.list").write_text(
            f"# toolkit lab kernel line {self.line.name}: {self.line.description}\n{srcs}")

    def options(self) -> list[str]:
        d = self.dir
        opts = {"Dir::Etc::SourceList": d / "sources.list",
                "Dir::Etc::SourceParts": d / "sources.list.d",
                "Dir::Etc::Preferences": "/dev/null",
                "Dir::Etc::PreferencesParts": d / "preferences.d",
                "Dir::State::Lists": d / "lists",
                "Dir::State::status": d / "status",
                "Dir::Cache": d / "cache"}
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def run(self, tool: str, *args: str, cwd: Path | None = None,
            show: bool = False) -> str:
        if not shutil.which(tool):
            raise LabError(f"`{tool}` is not installed: fetching lab kernels needs apt",
                           "the lab kernels are Debian/Ubuntu packages (docs/lab-kernels.md)")
        cmd = [tool, *self.options(), *args]
        env = dict(os.environ, LC_ALL="C")
        p = subprocess.run(cmd, cwd=cwd, env=env, text=True, stdin=subprocess.DEVNULL,
                           stdout=sys.stderr if show else subprocess.PIPE,
                           stderr=None if show else subprocess.PIPE)
        if p.returncode != 0:
            tail = "\n".join(((p.stdout or "") + (p.stderr or "")).strip().splitlines()[-8:])
            raise LabError(f"{tool} {' '.join(args[:2])} failed (exit {p.returncode})"
                           + (f":\n{tail}" if tail else ""),
                           "check the network and the line's sources (docs/lab-kernels.md)")
        return p.stdout or ""

    def update(self, quiet: bool) -> None:
        self.prepare()
        say(f"{self.line.name}: reading the package index of {', '.join(self.line.sources)}",
            quiet)
        self.run("apt-get", "-q", "update", show=not quiet)

    def show(self, spec: str) -> dict[str, str]:
        """The candidate stanza of a package (`name` or `name=version`)."""
        try:
            out = self.run("apt-cache", "show", "--no-all-versions", spec)
        except LabError:
            raise LabError(f"{spec} is not in the {self.line.name} line's index "
                           f"({', '.join(self.line.sources)})") from None
        fields: dict[str, str] = {}
        for line in out.split("\n\n")[0].splitlines():
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        return fields

    def pkgnames(self, prefix: str) -> list[str]:
        return self.run("apt-cache", "pkgnames", prefix).split()


def _depends(stanza: dict[str, str]) -> list[str]:
    """Every package name in Depends (all alternatives)."""
    return [re.split(r"[\s(:]", alt.strip())[0]
            for dep in stanza.get("Depends", "").split(",") for alt in dep.split("|")
            if alt.strip()]


def resolve(apt: Apt, spec: str) -> tuple[str, list[dict[str, str]]]:
    """(release, the stanzas of the packages to fetch) for a line name or release prefix."""
    line = apt.line
    if spec == line.name:
        meta = apt.show(line.meta)
        rels = [d.removeprefix("linux-image-") for d in _depends(meta)
                if d.startswith("linux-image-")]
        rels = [r for r in rels if line.owns(r)]
        if not rels:
            raise LabError(f"{line.meta} {meta.get('Version')} of line {line.name} names no "
                           f"image matching {line.release_pattern}")
        release = rels[0]
    else:
        rels = [n.removeprefix("linux-image-") for n in apt.pkgnames("linux-image-")]
        rels = sorted((r for r in rels if line.owns(r) and kcache.matches(r, spec)),
                      key=kcache._version_key)
        if not rels:
            raise LabError(f"no release matching '{spec}' in the {line.name} line's index",
                           f"`toolkit lab kernels fetch {line.name}` fetches its current one")
        release = rels[-1]
    todo = [p.format(release=release) for p in line.packages]
    stanzas, seen = [], set(todo)
    while todo:
        st = apt.show(todo.pop(0))
        stanzas.append(st)
        for dep in _depends(st):
            if dep not in seen and re.match(line.deps, dep):
                seen.add(dep)
                todo.append(dep)
    return release, stanzas


def download(apt: Apt, stanzas: list[dict[str, str]], into: Path, quiet: bool) -> list[Path]:
    """apt-get download the packages into `into`; each file checked against the index."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    if os.geteuid() == 0:
        try:
            shutil.chown(into, "_apt")   # apt downloads as _apt (its sandbox) when it can
        except (LookupError, OSError):
            pass
    total = sum(int(s.get("Size", 0)) for s in stanzas)
    say(f"downloading {len(stanzas)} packages ({_mb(total)}) with apt-get download", quiet)
    apt.run("apt-get", *(["-q"] if quiet else []), "download",
            *(f"{s['Package']}={s['Version']}" for s in stanzas), cwd=into, show=not quiet)
    debs = []
    for s in stanzas:
        found = sorted(into.glob(f"{s['Package']}_*.deb"))
        if len(found) != 1 or kcache._sha256(found[0]) != s.get("SHA256"):
            raise LabError(f"the download of {s['Package']} {s['Version']} is missing or "
                           "does not match the index's SHA256")
        debs.append(found[0])
    return debs


def _space_check(stanzas: list[dict[str, str]]) -> None:
    need = sum(int(s.get("Size", 0)) + 1024 * int(s.get("Installed-Size", 0))
               for s in stanzas)
    d = kcache.cache_dir()
    free = shutil.disk_usage(d).free
    if free < need * 1.1:
        raise LabError(f"{d} has {_mb(free)} free; fetching this kernel needs about "
                       f"{_mb(need)}", f"free some space, or set {kcache.CACHE_ENV}")


def unpack(debs: list[Path], root: Path, final: Path, release: str, quiet: bool) -> None:
    """dpkg-deb -x every package into root (which becomes `final`), then make it a
    self-contained tree: links and the headers' Makefile point inside `final`."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for i, deb in enumerate(debs, 1):
        say(f"unpacking {i}/{len(debs)} {deb.name} ({_mb(deb.stat().st_size)})", quiet)
        p = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True,
                           text=True)
        if p.returncode != 0:
            raise LabError(f"dpkg-deb -x {deb.name} failed: {p.stderr.strip()}")
    _relink(root, final)
    for mk in root.glob("usr/src/linux-headers-*/Makefile"):
        text = mk.read_text()
        fixed = re.sub(r"^(include\s+)(/usr/src/)", rf"\g<1>{final}\g<2>", text, flags=re.M)
        if fixed != text:
            mk.write_text(fixed)
    say(f"depmod {release}", quiet)
    p = subprocess.run([shutil.which("depmod") or "/usr/sbin/depmod", "-b", str(root),
                        release], capture_output=True, text=True)
    if p.returncode != 0:
        raise LabError(f"depmod -b {root} {release} failed: {p.stderr.strip()}",
                       "install kmod")


def _relink(root: Path, final: Path) -> None:
    """Every absolute link (/lib/modules/R/build -> /usr/src/...) to point into `final`."""
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            p = Path(dirpath, name)
            if p.is_symlink() and os.readlink(p).startswith("/"):
                target = os.readlink(p)
                p.unlink()
                p.symlink_to(str(final) + target)


def _stamp(root: Path, final: Path, line: Line, release: str, stanzas, seconds: float,
           ) -> None:
    """The manifest, then the stamp: written last, through a rename."""
    files, nbytes = kcache._write_manifest(root)
    e = Entry(release, root, "ok")
    mods = e.modules.relative_to(root)
    stamp = {"format": kcache.FORMAT, "line": line.name, "release": release,
             "root": str(final),
             "packages": [{"name": s["Package"], "version": s["Version"],
                           "sha256": s.get("SHA256"), "size": int(s.get("Size", 0))}
                          for s in stanzas],
             "manifest_sha256": kcache._sha256(root / kcache.MANIFEST),
             "files": files, "bytes": nbytes,
             "key_files": [f"boot/vmlinuz-{release}", f"{mods}/modules.dep", f"{mods}/build",
                           f"usr/src/linux-headers-{release}/Makefile"],
             "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(
                 timespec="seconds"),
             "fetch_seconds": round(seconds, 1)}
    tmp = root / (kcache.STAMP + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    tmp.rename(root / kcache.STAMP)


def fetch(spec: str, quiet: bool = False, force: bool = False) -> Entry:
    """Put the kernel `spec` names (a line: its current release; or a release prefix) in
    the cache, unless an intact entry of that release is there already (full check).
    A damaged or partial entry is replaced."""
    line = kcache.line_for(spec)
    with kcache.lock():
        t0 = time.monotonic()
        for stale in kcache.kernels_dir().glob(".*.partial"):   # interrupted fetches
            say(f"removing {stale.name}, left by an interrupted fetch", quiet)
            shutil.rmtree(stale)
        apt = Apt(line)
        apt.update(quiet)
        release, stanzas = resolve(apt, spec)
        final = kcache.kernels_dir() / release
        if final.is_dir() and not force:
            e = kcache.check(final, full=True)
            if e.ok:
                say(f"{release} already cached in {final} ({_mb(e.size())})", quiet)
                return e
            say(f"{release}: the cached entry is {e.status} ({e.reason}): fetching it again",
                quiet)
        _space_check(stanzas)
        return _build(apt, release, stanzas, final, t0, quiet)


def _build(apt: Apt, release: str, stanzas, final: Path, t0: float, quiet: bool) -> Entry:
    kdir = kcache.kernels_dir()
    root = kdir / f".{release}.partial"
    debs_dir = kcache.cache_dir() / "downloads" / release
    try:
        debs = download(apt, stanzas, debs_dir, quiet)
        unpack(debs, root, final, release, quiet)
        say(f"hashing the files of {release}", quiet)
        _stamp(root, final, apt.line, release, stanzas, time.monotonic() - t0)
        if final.exists():
            old = kdir / f".{release}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            shutil.rmtree(old)
        root.rename(final)
    finally:
        shutil.rmtree(debs_dir, ignore_errors=True)
        try:
            debs_dir.parent.rmdir()     # downloads/, when no other fetch left files there
        except OSError:
            pass
    e = kcache.check(final, full=False)
    if not e.ok:
        raise LabError(f"the new entry {final} fails its check: {e.reason}")
    say(f"{release} cached in {final} ({_mb(e.size())}, {time.monotonic() - t0:.1f} s)",
        quiet)
    return e


def ensure(specs: list[str], quiet: bool = False) -> list[Entry]:
    """For each spec, an intact cached entry (full check), fetching where there is none:
    what bin/setup runs. Offline when every entry is there and intact."""
    out = []
    for spec in specs:
        have = [e for e in kcache.select(spec, kcache.entries()) if e.ok]
        have = [e for e in have if kcache.check(e.path, full=True).ok]
        if have:
            say(f"{spec}: {have[-1].release} cached and intact", quiet)
            out.append(have[-1])
        else:
            out.append(fetch(spec, quiet=quiet))
    return out
