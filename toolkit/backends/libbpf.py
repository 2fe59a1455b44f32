"""libbpf from Python: ctypes over Debian's libbpf1 (libbpf.so.1), what the CO-RE engine
needs and nothing more.

Why ctypes: the library is the C API that libbpf-tools, bpftool and Falco's modern eBPF
driver use, it is packaged by every distribution with BTF kernels (libbpf1 on Debian 12),
and what the engine calls of it is a dozen functions: open an object, choose which
programs load, size a map, load (CO-RE relocation and the verifier happen there), attach,
read maps, poll a ring buffer, run an iterator. The maintained Python bindings on PyPI
either bundle their own libbpf build or need a generated skeleton; this module is one
file with no build step, as ``bpf_iter.py`` already does for libbcc.

libbpf's messages (warnings, the verifier log of a rejected program) go through
``libbpf_set_print`` to a Python callback, formatted by libc's vsnprintf, and end up in
the error that explains a failure instead of on the terminal. The callback is installed
around this module's own calls only and the previous one restored after: libbcc uses the
same libbpf.so.1, and BCC's messages stay BCC's.
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import ctypes.util
import os
import threading

from ..errors import BackendError

LIBBPF = "libbpf.so.1"
BTF_KIND_TYPEDEF, BTF_KIND_PTR, BTF_KIND_FUNC_PROTO = 8, 2, 13
LIBBPF_WARN = 0

_lib = None
_libc = None
_log: list[str] = []
_buf = None
_log_lock = threading.Lock()
PRINT_FN = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_char_p, ct.c_void_p)
SAMPLE_FN = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_size_t)


class IterAttachOpts(ct.Structure):
    """struct bpf_iter_attach_opts (libbpf 1.x): restricts an iterator (link info)."""
    _fields_ = [("sz", ct.c_size_t), ("link_info", ct.c_void_p),
                ("link_info_len", ct.c_uint32)]


class LibbpfError(BackendError):
    """A libbpf call failed; the message carries libbpf's own log lines."""


def _sig(lib, name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)


@PRINT_FN
def _print(level, fmt, args):
    """libbpf's print callback: format with vsnprintf, keep warnings and info."""
    if level > 1:           # LIBBPF_DEBUG: far too chatty to keep
        return 0
    with _log_lock:
        # one buffer big enough for a whole verifier log (libbpf prints it as one
        # message; its error is at the end), allocated once
        global _buf
        if _buf is None:
            _buf = ct.create_string_buffer(1 << 20)
        _libc.vsnprintf(_buf, len(_buf), fmt, ct.c_void_p(args))
        _log.append(_buf.value.decode("utf-8", "replace"))
        del _log[:-400]
    return 0


def lib():
    """The loaded libbpf, its signatures declared; a LibbpfError if it is missing."""
    global _lib, _libc
    if _lib is not None:
        return _lib
    try:
        L = ct.CDLL(LIBBPF, use_errno=True)
    except OSError as e:
        raise LibbpfError(f"cannot load {LIBBPF} ({e}): install libbpf1") from None
    _libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _libc.vsnprintf.argtypes = [ct.c_char_p, ct.c_size_t, ct.c_char_p, ct.c_void_p]
    P, I, U, S, B = ct.c_void_p, ct.c_int, ct.c_uint32, ct.c_char_p, ct.c_bool
    L.libbpf_set_print.restype = P      # argtypes unset: our PRINT_FN, or a saved pointer
    _sig(L, "libbpf_num_possible_cpus", I)
    _sig(L, "bpf_object__open_file", P, S, P)
    _sig(L, "bpf_object__load", I, P)
    _sig(L, "bpf_object__close", None, P)
    _sig(L, "bpf_object__find_program_by_name", P, P, S)
    _sig(L, "bpf_object__find_map_by_name", P, P, S)
    _sig(L, "bpf_object__next_program", P, P, P)
    _sig(L, "bpf_program__name", S, P)
    _sig(L, "bpf_program__set_autoload", I, P, B)
    _sig(L, "bpf_program__fd", I, P)
    _sig(L, "bpf_program__attach", P, P)
    _sig(L, "bpf_program__attach_iter", P, P, P)
    _sig(L, "bpf_link__destroy", I, P)
    _sig(L, "bpf_link__fd", I, P)
    _sig(L, "bpf_map__fd", I, P)
    _sig(L, "bpf_map__set_max_entries", I, P, U)
    _sig(L, "bpf_map__max_entries", U, P)
    _sig(L, "bpf_map_lookup_elem", I, I, P, P)
    _sig(L, "bpf_map_update_elem", I, I, P, P, ct.c_uint64)
    _sig(L, "bpf_map_delete_elem", I, I, P)
    _sig(L, "bpf_map_get_next_key", I, I, P, P)
    _sig(L, "bpf_obj_pin", I, I, S)
    _sig(L, "bpf_obj_get", I, S)
    _sig(L, "bpf_obj_get_info_by_fd", I, I, P, P)
    _sig(L, "ring_buffer__add", I, P, I, SAMPLE_FN, P)
    _sig(L, "bpf_iter_create", I, I)
    _sig(L, "ring_buffer__new", P, I, SAMPLE_FN, P, P)
    _sig(L, "ring_buffer__poll", I, P, I)
    _sig(L, "ring_buffer__consume", I, P)
    _sig(L, "ring_buffer__free", None, P)
    _sig(L, "btf__load_vmlinux_btf", P)
    _sig(L, "btf__free", None, P)
    _sig(L, "btf__find_by_name_kind", I, P, S, U)
    _sig(L, "btf__type_by_id", P, P, U)
    _lib = L
    return L


@contextlib.contextmanager
def captured():
    """libbpf's messages go to this module's log for the duration (see take_log)."""
    L = lib()
    prev = L.libbpf_set_print(_print)
    try:
        yield
    finally:
        L.libbpf_set_print(ct.c_void_p(prev))


def take_log() -> str:
    """libbpf's messages since the last call (the tail of a verifier log, ...)."""
    with _log_lock:
        text = "".join(_log)
        _log.clear()
    return text


def _fail(what: str, err: int | None = None) -> LibbpfError:
    err = abs(err) if err else ct.get_errno()
    log = "\n".join(ln for ln in take_log().splitlines() if ln.strip())
    tail = "\n".join(log.splitlines()[-25:])
    reason = os.strerror(err) if err else "failed"
    return LibbpfError(f"{what}: {reason} (errno {err})" + (f"\n{tail}" if tail else ""))


def possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise _fail("libbpf_num_possible_cpus", n)
    return n


class Link:
    """An attached program (bpf_link); destroy() detaches it."""

    def __init__(self, ptr: int, what: str):
        self.ptr, self.what = ptr, what

    @property
    def fd(self) -> int:
        return lib().bpf_link__fd(self.ptr)

    def destroy(self) -> None:
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
            self.ptr = None


class Program:
    def __init__(self, ptr: int, name: str):
        self.ptr, self.name = ptr, name

    def set_autoload(self, on: bool) -> None:
        err = lib().bpf_program__set_autoload(self.ptr, on)
        if err:
            raise _fail(f"autoload of {self.name}", err)

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self.ptr)

    def attach(self) -> Link:
        """Attach by the program's section (kprobe/..., tp_btf/..., fentry/...)."""
        with captured():
            ptr = lib().bpf_program__attach(self.ptr)
            if not ptr:
                raise _fail(f"attaching {self.name}")
        return Link(ptr, self.name)

    def iterate(self, link_info=None, chunk: int = 1 << 16) -> bytes:
        """Attach an iterator program, walk once, return every byte it wrote;
        `link_info`, a ctypes union bpf_iter_link_info member, restricts the walk (a
        task iterator to one process: bpf_iter.IterLinkInfoTask)."""
        opts = None
        if link_info is not None:
            opts = IterAttachOpts(ct.sizeof(IterAttachOpts), ct.addressof(link_info),
                                  ct.sizeof(link_info))
        with captured():
            ptr = lib().bpf_program__attach_iter(
                self.ptr, ct.byref(opts) if opts is not None else None)
            if not ptr:
                raise _fail(f"attaching iterator {self.name}")
        link = Link(ptr, self.name)
        try:
            fd = lib().bpf_iter_create(link.fd)
            if fd < 0:
                raise _fail(f"creating iterator {self.name}", fd)
            try:
                parts = []
                while True:
                    b = os.read(fd, chunk)
                    if not b:
                        return b"".join(parts)
                    parts.append(b)
            finally:
                os.close(fd)
        finally:
            link.destroy()


class Map:
    def __init__(self, ptr: int, name: str):
        self.ptr, self.name = ptr, name

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self.ptr)

    def set_max_entries(self, n: int) -> None:
        err = lib().bpf_map__set_max_entries(self.ptr, n)
        if err:
            raise _fail(f"sizing map {self.name}", err)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self.ptr)

    def update_u64(self, key: int, value: int) -> None:
        k, v = ct.c_uint32(key), ct.c_uint64(value)
        err = lib().bpf_map_update_elem(self.fd, ct.byref(k), ct.byref(v), 0)
        if err:
            raise _fail(f"updating {self.name}[{key}]", err)

    def update_struct(self, key: int, value: ct.Structure) -> None:
        """Set entry `key` of an array map to a ctypes struct of the value's size."""
        k = ct.c_uint32(key)
        err = lib().bpf_map_update_elem(self.fd, ct.byref(k), ct.byref(value), 0)
        if err:
            raise _fail(f"updating {self.name}[{key}]", err)

    def percpu_u64(self, key: int, ncpus: int) -> list[int]:
        """One u64 per possible CPU of a per-CPU array's entry."""
        k, vals = ct.c_uint32(key), (ct.c_uint64 * ncpus)()
        err = lib().bpf_map_lookup_elem(self.fd, ct.byref(k), vals)
        if err:
            raise _fail(f"reading {self.name}[{key}]", err)
        return list(vals)


def pin(fd: int, path: str) -> None:
    """Pin a map, program or link in bpffs (BPF_OBJ_PIN)."""
    err = lib().bpf_obj_pin(fd, path.encode())
    if err:
        raise _fail(f"pinning {path}", err)


def get_pinned(path: str) -> int:
    """A new descriptor of the object pinned at `path` (BPF_OBJ_GET)."""
    fd = lib().bpf_obj_get(path.encode())
    if fd < 0:
        raise _fail(f"opening the pin {path}", fd)
    return fd


class _MapInfo(ct.Structure):
    # the head of struct bpf_map_info (uapi/linux/bpf.h), the rest of the buffer zeroed
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16),
                ("rest", ct.c_uint8 * 128)]


def map_info(fd: int) -> dict:
    """type, key_size, value_size, max_entries and name of the map behind `fd`."""
    info, size = _MapInfo(), ct.c_uint32(ct.sizeof(_MapInfo))
    err = lib().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size))
    if err:
        raise _fail("bpf_obj_get_info_by_fd", err)
    return {"type": info.type, "key_size": info.key_size, "value_size": info.value_size,
            "max_entries": info.max_entries, "name": info.name.decode(errors="replace")}


class MapFd:
    """A map known by its descriptor alone (a pinned map): bytes in, bytes out."""

    def __init__(self, fd: int, key_size: int, value_size: int, name: str):
        self.fd, self.key_size, self.value_size, self.name = fd, key_size, value_size, name

    def lookup(self, key: bytes) -> bytes | None:
        v = ct.create_string_buffer(self.value_size)
        if lib().bpf_map_lookup_elem(self.fd, key, v):
            if ct.get_errno() == 2:     # ENOENT
                return None
            raise _fail(f"reading {self.name}")
        return v.raw

    def update(self, key: bytes, value: bytes) -> None:
        if lib().bpf_map_update_elem(self.fd, key, value, 0):
            raise _fail(f"updating {self.name}")

    def delete(self, key: bytes) -> bool:
        """False if there was no such key."""
        if lib().bpf_map_delete_elem(self.fd, key):
            if ct.get_errno() == 2:
                return False
            raise _fail(f"deleting from {self.name}")
        return True

    def keys(self) -> list[bytes]:
        out, prev = [], None
        nxt = ct.create_string_buffer(self.key_size)
        while lib().bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            out.append(nxt.raw)
            prev = ct.create_string_buffer(nxt.raw, self.key_size)
            if len(out) > 1 << 20:
                break
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Object:
    """A BPF object file: open, choose programs, size maps, load, then use."""

    def __init__(self, path: str):
        L = lib()
        take_log()
        self.path = path
        with captured():
            self.ptr = L.bpf_object__open_file(path.encode(), None)
            if not self.ptr:
                raise _fail(f"opening {path}")

    def programs(self) -> list[Program]:
        out, p = [], None
        while True:
            p = lib().bpf_object__next_program(self.ptr, p)
            if not p:
                return out
            out.append(Program(p, lib().bpf_program__name(p).decode()))

    def program(self, name: str) -> Program:
        p = lib().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not p:
            raise LibbpfError(f"{self.path}: no program {name}")
        return Program(p, name)

    def map(self, name: str) -> Map:
        m = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m:
            raise LibbpfError(f"{self.path}: no map {name}")
        return Map(m, name)

    def load(self) -> None:
        with captured():
            err = lib().bpf_object__load(self.ptr)
            if err:
                raise _fail(f"loading {os.path.basename(self.path)}", err)

    def close(self) -> None:
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None


class RingBuffer:
    """A BPF ring buffer's reader: poll() waits for a wakeup, consume() drains without
    waiting; every record is appended to `sink` as bytes."""

    def __init__(self, map_fd: int, sink: list):
        def on_record(ctx, data, size):
            sink.append(ct.string_at(data, size))
            return 0
        self._cb = SAMPLE_FN(on_record)     # kept alive as long as the ring
        self.ptr = lib().ring_buffer__new(map_fd, self._cb, None, None)
        if not self.ptr:
            raise _fail("ring_buffer__new")

    def poll(self, timeout_ms: int) -> int:
        n = lib().ring_buffer__poll(self.ptr, timeout_ms)
        if n < 0 and n != -4:       # EINTR: a signal, not a failure
            raise _fail("ring_buffer__poll", n)
        return max(n, 0)

    def consume(self) -> int:
        n = lib().ring_buffer__consume(self.ptr)
        if n < 0:
            raise _fail("ring_buffer__consume", n)
        return n

    def add(self, map_fd: int) -> None:
        """One more ring buffer into the same reader (and the same sink)."""
        err = lib().ring_buffer__add(self.ptr, map_fd, self._cb, None)
        if err:
            raise _fail("ring_buffer__add", err)

    def free(self) -> None:
        if self.ptr:
            lib().ring_buffer__free(self.ptr)
            self.ptr = None


class _BtfType(ct.Structure):
    _fields_ = [("name_off", ct.c_uint32), ("info", ct.c_uint32), ("size_or_type", ct.c_uint32)]


def tracepoint_arity(name: str) -> int | None:
    """How many arguments the kernel's tracepoint `name` passes (its btf_trace_<name>
    typedef's prototype, minus the leading void *), from the running kernel's BTF;
    None if the kernel's BTF does not have it."""
    L = lib()
    btf = L.btf__load_vmlinux_btf()
    if not btf:
        return None
    try:
        tid = L.btf__find_by_name_kind(btf, f"btf_trace_{name}".encode(), BTF_KIND_TYPEDEF)
        for _ in range(3):      # typedef -> pointer -> function prototype
            if tid <= 0:
                return None
            t = _BtfType.from_address(L.btf__type_by_id(btf, tid))
            kind = (t.info >> 24) & 0x1F
            if kind == BTF_KIND_FUNC_PROTO:
                return (t.info & 0xFFFF) - 1
            tid = t.size_or_type
        return None
    finally:
        L.btf__free(btf)
