"""The lab's kernels: distribution kernel packages in a private cache, never installed.

Each kernel's packages (image, headers, their kbuild and -common parts) are downloaded
with apt's own tools as .deb files, through a private sources list, lists directory,
package cache and (empty) dpkg status, so nothing under /etc/apt, /var/lib/apt or
/var/cache/apt changes; then unpacked with `dpkg-deb -x` into one directory per
release. Nothing is installed: /boot, /lib/modules and dpkg's database stay as they were.

    $TOOLKIT_CACHE (default /var/lib/toolkit)/
      kernels/<release>/            one entry: the packages' files as dpkg-deb unpacks them
        boot/vmlinuz-<release>      what the lab boots
        lib/modules/<release>/      modules (depmod run here), build and source links
        usr/src/linux-headers-*     headers, fixed to point inside the entry
        .toolkit-manifest           sha256, size and path of every file
        .toolkit-entry.json         the completion stamp, written last
      kernels/.<release>.partial/   an entry being built (renamed into place when done)
      apt/<line>/                   the line's private apt state (sources, lists, cache)

An entry is complete only with its stamp, and the stamp only after every file is in place
and hashed; the finished directory is renamed into place in one step. So an interrupted
fetch leaves a .partial directory (never booted, cleaned at the next fetch) and a damaged
entry fails its check (`check`): the lab refuses it and `fetch` replaces it.
Not /var/cache: virtme-ng mounts a tmpfs over /var/cache (and /var/tmp, /tmp) in the
guest, which would hide the modules and headers the guest needs.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tomllib
from pathlib import Path

from .errors import LabError

CACHE_ENV = "TOOLKIT_CACHE"
LINES_ENV = "TOOLKIT_LAB_LINES"
DEFAULT_CACHE = Path("/var/lib/toolkit")
LINES_FILE = Path(__file__).with_name("lab_lines.toml")
STAMP = ".toolkit-entry.json"
MANIFEST = ".toolkit-manifest"
FORMAT = 1
# host directories virtme-ng hides in the guest (tmpfs over them): no cache there
GUEST_HIDDEN = ("/tmp", "/var/tmp", "/var/cache", "/var/log", "/run", "/dev", "/proc", "/sys",
                "/var/lib/apt", "/var/lib/private", "/var/lib/sudo", "/var/lib/machines",
                "/var/lib/portables")


def cache_dir() -> Path:
    """$TOOLKIT_CACHE, else /var/lib/toolkit."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).absolute()


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def hidden_in_guest(path: Path) -> str | None:
    """The guest-hidden directory `path` is under, if any."""
    p = str(Path(path).absolute())
    return next((h for h in GUEST_HIDDEN if p == h or p.startswith(h + "/")), None)


# ---------------------------------------------------------------- lines

@dataclasses.dataclass
class Line:
    name: str
    description: str
    sources: list[str]
    keyring: str
    meta: str
    release_pattern: str
    packages: list[str]
    deps: str
    default: bool = False

    def owns(self, release: str) -> bool:
        return re.match(self.release_pattern, release) is not None


def lines() -> dict[str, Line]:
    """The known lines: lab_lines.toml, then $TOOLKIT_LAB_LINES (which may add or replace)."""
    out: dict[str, Line] = {}
    files = [LINES_FILE] + ([Path(os.environ[LINES_ENV])] if os.environ.get(LINES_ENV) else [])
    for f in files:
        try:
            tables = tomllib.loads(f.read_text()).get("lines", {})
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise LabError(f"cannot read the lab kernel lines from {f}: {e}") from None
        for name, t in tables.items():
            try:
                out[name] = Line(name=name, **t)
            except TypeError as e:
                raise LabError(f"{f}: line {name!r}: {e}") from None
    return out


def default_line() -> str:
    return next((n for n, ln in lines().items() if ln.default), next(iter(lines())))


def matches(release: str, prefix: str) -> bool:
    """'6.1' matches 6.1.0-56-amd64 but not 6.12.95+deb12-amd64: a prefix ends at a
    version boundary."""
    if not release.startswith(prefix):
        return False
    rest = release[len(prefix):]
    return not rest or not (rest[0].isdigit() and prefix[-1].isdigit())


def line_for(spec: str) -> Line:
    """The line a fetch spec names: a line's name, or a release prefix within one line."""
    known = lines()
    if spec in known:
        return known[spec]
    found = [ln for ln in known.values() if matches(spec, ln.name)]
    if not found:
        raise LabError(f"no lab kernel line for '{spec}' (lines: {', '.join(known)})",
                       f"add one to {LINES_FILE.name} or ${LINES_ENV} (docs/lab-kernels.md)")
    return max(found, key=lambda ln: len(ln.name))


# ---------------------------------------------------------------- entries

@dataclasses.dataclass
class Entry:
    release: str
    path: Path
    status: str          # "ok", "partial" (no stamp: interrupted) or "corrupt"
    reason: str = ""
    stamp: dict = dataclasses.field(default_factory=dict)

    @property
    def kernel(self) -> Path:
        return self.path / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        usr = self.path / "usr" / "lib" / "modules" / self.release
        return usr if usr.is_dir() else self.path / "lib" / "modules" / self.release

    @property
    def headers(self) -> Path:
        return self.path / "usr" / "src" / f"linux-headers-{self.release}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def size(self) -> int:
        return int(self.stamp.get("bytes") or _du(self.path))

    def as_dict(self) -> dict:
        return {"release": self.release, "line": self.stamp.get("line"), "status": self.status,
                "reason": self.reason, "path": str(self.path), "kernel": str(self.kernel),
                "headers": str(self.headers), "bytes": self.size(),
                "packages": self.stamp.get("packages", []),
                "fetched": self.stamp.get("fetched"),
                "fetch_seconds": self.stamp.get("fetch_seconds")}


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def entries(full: bool = False) -> list[Entry]:
    """Every entry of the cache, oldest release first, each checked (`check`); interrupted
    fetches (.partial directories) included, as status "partial"."""
    kdir = kernels_dir()
    out = []
    for d in sorted(kdir.iterdir()) if kdir.is_dir() else []:
        if d.name.startswith(".") and d.name.endswith(".partial") and d.is_dir():
            out.append(Entry(d.name[1:-len(".partial")], d, "partial",
                             "an interrupted fetch (no completion stamp)"))
        elif not d.name.startswith(".") and d.is_dir():
            out.append(check(d, full=full))
    return sorted(out, key=lambda e: _version_key(e.release))


def _version_key(release: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def find(release: str) -> Entry | None:
    d = kernels_dir() / release
    return check(d) if d.is_dir() else None


def headers_for(release: str) -> Path | None:
    """The headers (a kernel build dir) of `release` in its intact cache entry, if any."""
    e = find(release)
    return e.headers if e and e.ok and (e.headers / "Makefile").exists() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check(path: Path, full: bool = False) -> Entry:
    """Is the entry at `path` complete and intact? Quick (every use): the stamp, the
    manifest's own hash, the image, modules.dep and the headers' Makefile hashed. Full
    (`lab kernels verify`, `fetch`, bin/setup): every file's size and sha256 too."""
    rel = path.name
    try:
        stamp = json.loads((path / STAMP).read_text())
    except FileNotFoundError:
        return Entry(rel, path, "partial", f"no completion stamp {STAMP}: an interrupted fetch")
    except (OSError, ValueError) as e:
        return Entry(rel, path, "corrupt", f"unreadable stamp: {e}")
    e = Entry(rel, path, "ok", "", stamp)
    problem = _check_stamp(e, stamp) or _check_files(e, stamp, full)
    if problem:
        e.status, e.reason = "corrupt", problem
    return e


def _check_stamp(e: Entry, stamp: dict) -> str | None:
    if stamp.get("format") != FORMAT or stamp.get("release") != e.release:
        return f"stamp of another format or release ({stamp.get('format')}, " \
               f"{stamp.get('release')})"
    if stamp.get("root") != str(e.path):
        return f"made for {stamp.get('root')}, not {e.path} (its links point there)"
    try:
        if _sha256(e.path / MANIFEST) != stamp.get("manifest_sha256"):
            return f"{MANIFEST} does not match the stamp"
    except OSError as err:
        return f"{MANIFEST}: {err.strerror}"
    return None


def _check_files(e: Entry, stamp: dict, full: bool) -> str | None:
    key = set(stamp.get("key_files", []))
    for digest, size, rel in _read_manifest(e.path):
        if not full and rel not in key:
            continue
        p = e.path / rel
        try:
            if digest == "link":
                if os.readlink(p) != size:
                    return f"{rel}: link changed"
                continue
            if p.stat().st_size != int(size) or _sha256(p) != digest:
                return f"{rel}: size or checksum differs from the manifest"
        except OSError as err:
            return f"{rel}: {err.strerror}"
    return None


def _read_manifest(root: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in (root / MANIFEST).read_text().splitlines():
        digest, size, rel = line.split(" ", 2)
        out.append((digest, size, rel))
    return out


def _write_manifest(root: Path) -> tuple[int, int]:
    """Hash every file under root into the manifest; (files, bytes)."""
    rows, nbytes = [], 0
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        # links to directories come in `dirs` (and are not followed): record them too
        for f in sorted(files + [d for d in dirs if Path(dirpath, d).is_symlink()]):
            p = Path(dirpath, f)
            rel = str(p.relative_to(root))
            if rel in (MANIFEST, STAMP):
                continue
            if p.is_symlink():
                rows.append(f"link {os.readlink(p)} {rel}")
            else:
                size = p.stat().st_size
                nbytes += size
                rows.append(f"{_sha256(p)} {size} {rel}")
    (root / MANIFEST).write_text("\n".join(rows) + "\n")
    return len(rows), nbytes


# ---------------------------------------------------------------- changing the cache

class _Lock:
    """One writer at a time: fetch and remove hold an exclusive lock on <cache>/.lock."""

    def __enter__(self):
        d = cache_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            self.f = open(d / ".lock", "w")
        except OSError as e:
            raise LabError(f"cannot write the lab kernel cache {d}: {e.strerror}",
                           f"run as root, or set {CACHE_ENV} to a directory of yours") from None
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()


def lock() -> _Lock:
    return _Lock()


def select(spec: str, candidates: list[Entry]) -> list[Entry]:
    """The entries a spec names: a line's name (its releases), else a release prefix."""
    known = lines()
    if spec in known:
        return [e for e in candidates if known[spec].owns(e.release)
                or e.stamp.get("line") == spec]
    return [e for e in candidates if matches(e.release, spec)]


def remove(spec: str) -> list[Entry]:
    """Remove the entries (complete or not) that `spec` names; returns them."""
    with lock():
        gone = select(spec, entries())
        if not gone:
            raise LabError(f"no cached lab kernel matches '{spec}'",
                           "`toolkit lab kernels` lists them")
        for e in gone:
            shutil.rmtree(e.path)
    return gone
