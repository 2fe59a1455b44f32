"""The lifecycle record, read from the one C definition in include/toolkit_record.h.

The header's X-macro field list is parsed at import time, so Python cannot drift
from the C sides; tests/test_schema.py compiles the header and checks that the
struct layout computed here matches the C compiler's sizeof/offsetof.

Two encodings of a record exist:
  * binary: struct tk_record as the eBPF ring buffer carries it (see ``unpack``);
  * text: one line of /proc/toolkit/events: the scalar fields in header order as
    decimal numbers, then comm with space, tab, newline and backslash written as
    octal escapes (the kernel's seq_escape), see ``parse_line``.
"""
from __future__ import annotations

import dataclasses
import enum
import re
import struct
from pathlib import Path

from .paths import INCLUDE_DIR

HEADER = INCLUDE_DIR / "toolkit_record.h"

_CTYPES = {"__u64": "Q", "__u32": "I", "__s32": "i", "char": "s"}


def _read_header(path: Path = HEADER) -> str:
    text = path.read_text()
    # join continuation lines and drop comments, so the macros read as one line each
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return text.replace("\\\n", " ")


def _define(text: str, name: str) -> str:
    m = re.search(rf"^#define\s+{name}(?!\w)(.*)$", text, re.M)
    if not m:
        raise RuntimeError(f"{HEADER}: no #define {name}")
    return m.group(1).strip()


def _fields(body: str, consts: dict) -> list:
    """An F()/A() X-macro field list -> [(name, ctype, count or None)], in order."""
    fields = []
    for kind, args in re.findall(r"\b([FA])\(([^\"]*?),\s*\"", body):
        parts = [p.strip() for p in args.split(",")]
        if kind == "F":
            fields.append((parts[1], parts[0], None))
        else:
            count = parts[2]
            fields.append((parts[1], parts[0], consts.get(count) or int(count)))
    return fields


def _parse(text: str):
    version = int(_define(text, "TK_RECORD_VERSION"))
    comm_len = int(_define(text, "TK_COMM_LEN"))
    consts = {"TK_COMM_LEN": comm_len}
    types = [(n, int(v), t) for n, v, t in
             re.findall(r'X\((\w+),\s*(\d+),\s*"(\w+)"\)', _define(text, r"TK_EVENT_TYPES\(X\)"))]
    fields = _fields(_define(text, r"TK_RECORD_FIELDS\(F, A\)"), consts)
    flags = {n: int(v, 0) for n, v in re.findall(r"^#define\s+TK_FLAG_(\w+)\s+(0x[0-9a-fA-F]+|\d+)",
                                                 text, re.M)}
    kinds = [(n, int(i), t) for n, i, t in re.findall(
        r'K\((\w+),\s*(\d+),\s*"(\w+)"\)', _define(text, r"TK_COUNTER_KINDS\(K\)"))]
    hooks = re.findall(r'H\((\w+),\s*"(\w+)",\s*"(\w+)"\)', _define(text, r"TK_HOOKS\(H\)"))
    slots = [(n, int(i), t) for n, i, t in re.findall(
        r'C\((\w+),\s*(\d+),\s*"(\w+)"\)', _define(text, r"TK_CONFIG_SLOTS\(C\)"))]
    filter_off = int(_define(text, "TK_FILTER_OFF").rstrip("ULul"), 0)
    quotas = [(n, int(v), t) for n, v, t in re.findall(
        r'Q\((\w+),\s*(\d+),\s*"(\w+)"\)', _define(text, r"TK_QUOTA_KINDS\(Q\)"))]
    return version, comm_len, types, fields, flags, kinds, hooks, slots, filter_off, quotas


(RECORD_VERSION, COMM_LEN, _TYPES, _FIELDS, FLAGS, _KINDS, _HOOKS, _SLOTS,
 FILTER_OFF, _QUOTAS) = _parse(_read_header())

EventType = enum.IntEnum("EventType", {n: v for n, v, _ in _TYPES})
EventType.__doc__ = "Event types of TK_EVENT_TYPES in include/toolkit_record.h."
EVENT_NAMES = {v: t for _, v, t in _TYPES}          # 1 -> "fork"
EVENT_BY_NAME = {t: v for _, v, t in _TYPES}        # "fork" -> 1

EVENT_MAX = max(v for _, v, _ in _TYPES)      # values run 1..EVENT_MAX (TK_EVENT_MAX)

# Drop-counter kinds in index order (TK_COUNTER_KINDS): seen, filtered, delivered, dropped.
COUNTER_KINDS = tuple(t for _, _, t in sorted(_KINDS, key=lambda k: k[1]))
NKINDS = len(COUNTER_KINDS)
NCOUNTERS = (EVENT_MAX + 1) * NKINDS


def counter_key(event_type: int, kind: str) -> int:
    """Index of the (event type, kind) counter in the eBPF counter array (TK_COUNTER_KEY)."""
    return int(event_type) * NKINDS + COUNTER_KINDS.index(kind)


# The hooked kernel functions (TK_HOOKS): (hook name, kernel symbol, event name).
HOOKS = tuple((n.lower(), sym, ev) for n, sym, ev in _HOOKS)
HOOK_SYMBOLS = {n: sym for n, sym, _ in HOOKS}      # "fork" -> "wake_up_new_task"

# Filter encoding shared by both kernel sides (TK_FILTER_*), and eBPF's config slots.
CONFIG_SLOTS = {t: i for _, i, t in _SLOTS}          # "uid" -> 0, "ppid" -> 1


# Quota kinds (TK_QUOTA_KINDS): "heap" -> 1, "files" -> 2; a kill record's quota_kind.
QUOTA_KINDS = {t: v for _, v, t in _QUOTAS}
QUOTA_NAMES = {v: t for _, v, t in _QUOTAS}


def filter_encode(ident: int | None) -> int:
    """How a uid or parent-tgid filter is stored in the kernel (None: off)."""
    return FILTER_OFF if ident is None else int(ident) + 1


FIELD_NAMES = [name for name, _, _ in _FIELDS]
SCALAR_FIELDS = [name for name, _, count in _FIELDS if count is None]
FIELD_CTYPES = {name: (ctype, count) for name, ctype, count in _FIELDS}


def fields_of_version(version: int) -> list[str]:
    """The record's field names as version `version` of the header had them."""
    if not OLDEST_READABLE_VERSION <= version <= RECORD_VERSION:
        raise ValueError(f"record version {version} is not one this toolkit reads "
                         f"({OLDEST_READABLE_VERSION}..{RECORD_VERSION})")
    later = {n for v, names in FIELDS_SINCE.items() if v > version for n in names}
    return [n for n in FIELD_NAMES if n not in later]

STRUCT_FORMAT = "=" + "".join(
    (f"{count}s" if count else _CTYPES[ctype]) for _, ctype, count in _FIELDS)
RECORD_SIZE = struct.calcsize(STRUCT_FORMAT)
_STRUCT = struct.Struct(STRUCT_FORMAT)

# Fields appended by record version 2 (the kill event's); a version-1 record (a
# results file written before them) reads them as 0, and so does a Record built
# without them. The header's rule is that fields are only ever appended, so older
# versions are prefixes of FIELD_NAMES.
FIELDS_SINCE = {2: ("quota", "quota_value", "quota_kind", "quota_pad")}
OLDEST_READABLE_VERSION = 1
_APPENDED = {n for names in FIELDS_SINCE.values() for n in names}

Record = dataclasses.make_dataclass(
    "Record",
    [(name, str if count else int, dataclasses.field(default=0)) if name in _APPENDED
     else (name, str if count else int) for name, _, count in _FIELDS],
    frozen=True, slots=True,
    namespace={"__doc__": "One lifecycle event; fields as in struct tk_record.",
               "event": property(lambda self: EVENT_NAMES.get(self.type, str(self.type))),
               "key": property(lambda self: (self.tgid, self.start_ns))},
)


def offsets() -> dict[str, int]:
    """Byte offset of each field in struct tk_record (packed, as the header promises)."""
    out, off = {}, 0
    for name, ctype, count in _FIELDS:
        out[name] = off
        off += struct.calcsize("=" + (f"{count}s" if count else _CTYPES[ctype]))
    return out


def _decode_comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# unpack() runs once per record a collector reads (tens of thousands a second in a
# storm), so it fills the frozen Record through its slots' own setters: the frozen
# __init__ goes through object.__setattr__ per field, 2.1 of the 4.7 us a record took
# (measured natively); this way a record takes about 2 us. The result is the same Record.
_SETTERS = tuple(Record.__dict__[name].__set__ for name in FIELD_NAMES)
_COMM_AT = tuple(i for i, (_, _, count) in enumerate(_FIELDS) if count)
_new_record = object.__new__


def unpack(buf: bytes | bytearray | memoryview) -> "Record":
    """Decode one binary struct tk_record."""
    values = _STRUCT.unpack_from(buf)
    rec = _new_record(Record)
    for set_field, value in zip(_SETTERS, values):
        set_field(rec, value)
    for i in _COMM_AT:
        _SETTERS[i](rec, _decode_comm(values[i]))
    return rec


def pack(rec: "Record") -> bytes:
    values = [getattr(rec, n) for n in FIELD_NAMES]
    for i, (_, _, count) in enumerate(_FIELDS):
        if count:
            values[i] = values[i].encode()[:count]
    return _STRUCT.pack(*values)


_OCTAL = re.compile(rb"\\([0-7]{3})")


def unescape(text: str) -> str:
    """Undo the kernel's seq_escape octal escapes (\\ooo)."""
    raw = text.encode("utf-8", "surrogateescape")
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), raw)
    return raw.decode("utf-8", "replace")


def escape(comm: str) -> str:
    """The inverse of unescape: how the module prints comm."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in comm)


def parse_line(line: str) -> "Record":
    """Parse one line of /proc/toolkit/events (scalars in header order, then comm)."""
    parts = line.rstrip("\n").split(" ", len(SCALAR_FIELDS))
    if len(parts) != len(FIELD_NAMES):
        raise ValueError(f"expected {len(FIELD_NAMES)} fields, got {len(parts)}: {line!r}")
    values = dict(zip(SCALAR_FIELDS, (int(p) for p in parts[:-1])))
    return Record(**values, comm=unescape(parts[-1]))


def format_line(rec: "Record") -> str:
    """The text form of a record, exactly as the module prints it."""
    return " ".join([str(getattr(rec, n)) for n in SCALAR_FIELDS] + [escape(rec.comm)])


def as_dict(rec: "Record") -> dict:
    """Record as a dict with the header's field names plus the event name."""
    d = dataclasses.asdict(rec)
    d["event"] = rec.event
    return d


# ---------------------------------------------------------------- process table rows
# struct tk_proc_row (TK_PROC_FIELDS): one process as the eBPF task iterator
# (ebpf/procs.c) writes it; the same columns as the module's /proc/toolkit/processes.

_TEXT = _read_header()
PROC_VERSION = int(_define(_TEXT, "TK_PROC_VERSION"))
_PROC_FIELDS = _fields(_define(_TEXT, r"TK_PROC_FIELDS\(F, A\)"), {"TK_COMM_LEN": COMM_LEN})
PROC_FIELD_NAMES = [name for name, _, _ in _PROC_FIELDS]
PROC_FIELD_CTYPES = {name: (ctype, count) for name, ctype, count in _PROC_FIELDS}
PROC_FLAGS = {n: int(v, 0) for n, v in re.findall(
    r"^#define\s+TK_PROC_FLAG_(\w+)\s+(0x[0-9a-fA-F]+|\d+)", _TEXT, re.M)}
PROC_STRUCT_FORMAT = "=" + "".join(
    (f"{count}s" if count else _CTYPES[ctype]) for _, ctype, count in _PROC_FIELDS)
PROC_ROW_SIZE = struct.calcsize(PROC_STRUCT_FORMAT)
_PROC_STRUCT = struct.Struct(PROC_STRUCT_FORMAT)


def proc_offsets() -> dict[str, int]:
    """Byte offset of each field in struct tk_proc_row."""
    out, off = {}, 0
    for name, ctype, count in _PROC_FIELDS:
        out[name] = off
        off += struct.calcsize("=" + (f"{count}s" if count else _CTYPES[ctype]))
    return out


def unpack_proc_rows(buf: bytes) -> list[dict]:
    """Decode back-to-back struct tk_proc_row; the state field becomes its letter and
    comm a str. A length that is not a whole number of rows is an error (a truncated
    read), never silently cut."""
    if len(buf) % PROC_ROW_SIZE:
        raise ValueError(f"{len(buf)} bytes is not a whole number of "
                         f"{PROC_ROW_SIZE}-byte process rows")
    out = []
    for values in _PROC_STRUCT.iter_unpack(buf):
        row = dict(zip(PROC_FIELD_NAMES, values))
        row["comm"] = _decode_comm(row["comm"])
        row["state"] = chr(row["state"]) if 0 < row["state"] < 128 else "?"
        out.append(row)
    return out


# ---------------------------------------------------------------- the quota contracts
# include/toolkit_quota.h: the hooks of both quota hook sets, the eBPF map value, its
# counter slots and the pinned layout's marker, written once for the module, both eBPF
# builds and Python (checked against the C compiler by tests/test_schema.py).

QUOTA_HEADER = INCLUDE_DIR / "toolkit_quota.h"
_QTEXT = _read_header(QUOTA_HEADER)
QUOTA_LAYOUT = int(_define(_QTEXT, "TK_QUOTA_LAYOUT"))
QUOTA_MAGIC = int(_define(_QTEXT, "TK_QUOTA_MAGIC").rstrip("ULul"), 0)
QUOTA_ENTRIES = int(_define(_QTEXT, "TK_QUOTA_ENTRIES"))
FD_WORDS = int(_define(_QTEXT, "TK_FD_WORDS"))
# (kind, target, how): kind heap/files/exit; how kprobe (target: a function) or
# kretprobe (target: a syscall, hooked at __x64_sys_<target>)
QUOTA_KPROBES = tuple(
    (kind.lower(), target, "kprobe" if pr == "P" else "kretprobe")
    for pr, kind, target in re.findall(r"\b([PR])\((\w+),\s*(\w+)\)",
                                       _define(_QTEXT, r"TK_QUOTA_KPROBES\(P, R\)")))
# (kind, raw tracepoint, what is checked there): kind all (heap and files) or exit
QUOTA_TRACEPOINTS = tuple(
    (kind.lower(), tp, doc) for kind, tp, doc in re.findall(
        r'T\((\w+),\s*(\w+),\s*"([^"]*)"\)', _define(_QTEXT, r"TK_QUOTA_TRACEPOINTS\(T\)")))
QUOTA_VALUE_FIELDS = tuple((name, ctype) for ctype, name in re.findall(
    r'V\((\w+),\s*(\w+),\s*"', _define(_QTEXT, r"TK_QUOTA_VALUE_FIELDS\(V\)")))
QUOTA_VALUE_FORMAT = "=" + "".join(_CTYPES[c] for _, c in QUOTA_VALUE_FIELDS)
QUOTA_VALUE_SIZE = struct.calcsize(QUOTA_VALUE_FORMAT)
QUOTA_COUNTS = {t: int(i) for _, i, t in re.findall(
    r'C\((\w+),\s*(\d+),\s*"(\w+)"\)', _define(_QTEXT, r"TK_QUOTA_COUNTS\(C\)"))}
QUOTA_MARKS = {t: int(i) for _, i, t in re.findall(
    r'M\((\w+),\s*(\d+),\s*"(\w+)"\)', _define(_QTEXT, r"TK_QUOTA_MARKS\(M\)"))}


def quota_program(kind: str, target: str, how: str) -> str:
    """The entry point of one quota hook (ebpf/tk_quota.h): kp_<function>,
    kr_<syscall>, rt_<tracepoint>."""
    return {"kprobe": "kp_", "kretprobe": "kr_", "raw_tp": "rt_"}[how] + target


def quota_symbol(target: str, how: str) -> str:
    """The kernel function a kprobe-set hook attaches to."""
    return f"__x64_sys_{target}" if how == "kretprobe" else target
