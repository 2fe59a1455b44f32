"""The Python record is generated from include/toolkit_record.h; hold it to the C compiler."""
import shutil
import subprocess

import pytest

from toolkit import schema
from toolkit.paths import INCLUDE_DIR

PROBE_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/types.h>
#include "toolkit_record.h"
int main(void)
{
	printf("version %d\n", TK_RECORD_VERSION);
	printf("size %zu\n", sizeof(struct tk_record));
#define F(type, name, doc) printf("field %s %zu %zu\n", #name, \
	offsetof(struct tk_record, name), sizeof(((struct tk_record *)0)->name));
#define A(type, name, n, doc) F(type, name, doc)
	TK_RECORD_FIELDS(F, A)
#define E(name, value, text) printf("event %s %d %s\n", #name, TK_EVENT_##name, text);
	TK_EVENT_TYPES(E)
	printf("flag HAS_MM %d\n", TK_FLAG_HAS_MM);
	printf("event_max %d\n", TK_EVENT_MAX);
#define K(name, index, text) printf("kind %s %d %d\n", text, TK_##name, index);
	TK_COUNTER_KINDS(K)
	printf("nkinds %d\n", TK_NKINDS);
	printf("ncounters %d\n", TK_NCOUNTERS);
	printf("key_exit_dropped %d\n", TK_COUNTER_KEY(TK_EVENT_EXIT, TK_DROPPED));
#define H(name, symbol, event) printf("hook %s %s %d\n", symbol, event, TK_HOOK_##name);
	TK_HOOKS(H)
	printf("hook_max %d\n", TK_HOOK_MAX);
#define C(name, index, text) printf("slot %s %d\n", text, TK_CONFIG_##name);
	TK_CONFIG_SLOTS(C)
#define Q(name, value, text) printf("quota %s %d %d\n", text, TK_QUOTA_##name, value);
	TK_QUOTA_KINDS(Q)
	printf("proc_version %d\n", TK_PROC_VERSION);
	printf("proc_size %zu\n", sizeof(struct tk_proc_row));
	printf("proc_flag_cpu_partial %d\n", TK_PROC_FLAG_CPU_PARTIAL);
#define PF(type, name, doc) printf("pfield %s %zu %zu\n", #name, \
	offsetof(struct tk_proc_row, name), sizeof(((struct tk_proc_row *)0)->name));
#define PA(type, name, n, doc) PF(type, name, doc)
	TK_PROC_FIELDS(PF, PA)
	printf("filter_off %llu\n", (unsigned long long)TK_FILTER_OFF);
	printf("filter_uid0 %llu\n", (unsigned long long)TK_FILTER_ENCODE(0));
	printf("passes_off %d\n", TK_FILTER_PASSES(TK_FILTER_OFF, 7));
	printf("passes_same %d\n", TK_FILTER_PASSES(TK_FILTER_ENCODE(7), 7));
	printf("passes_other %d\n", TK_FILTER_PASSES(TK_FILTER_ENCODE(7), 8));
	printf("passes_uid0_vs_off %d\n", TK_FILTER_PASSES(TK_FILTER_ENCODE(0), 1));
	return 0;
}
"""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("no C compiler: bin/setup installs build-essential")
    d = tmp_path_factory.mktemp("schema")
    (d / "probe.c").write_text(PROBE_C)
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(INCLUDE_DIR), "-o", str(d / "probe"),
                    str(d / "probe.c")], check=True, timeout=120)
    out = subprocess.run([str(d / "probe")], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    fields, events, flags, info = {}, {}, {}, {}
    info["pfields"] = {}
    info["kinds"], info["hooks"], info["slots"], info["quotas"] = [], [], {}, {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "kind":
            info["kinds"].append((rest[0], int(rest[1]), int(rest[2])))
        elif kind == "hook":
            info["hooks"].append((rest[0], rest[1], int(rest[2])))
        elif kind == "quota":
            info["quotas"][rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "slot":
            info["slots"][rest[0]] = int(rest[1])
        elif kind == "pfield":
            info["pfields"][rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "field":
            fields[rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "event":
            events[rest[0]] = (int(rest[1]), rest[2])
        elif kind == "flag":
            flags[rest[0]] = int(rest[1])
        else:
            info[kind] = int(rest[0])
    return info, fields, events, flags


def test_version_and_size_match_c(c_layout):
    info, _, _, _ = c_layout
    assert schema.RECORD_VERSION == info["version"]
    assert schema.RECORD_SIZE == info["size"]


def test_field_order_offsets_and_sizes_match_c(c_layout):
    _, fields, _, _ = c_layout
    assert schema.FIELD_NAMES == list(fields)
    offs = schema.offsets()
    for name, (off, size) in fields.items():
        assert offs[name] == off, name
        ctype, count = schema.FIELD_CTYPES[name]
        assert (count or {"__u64": 8, "__u32": 4, "__s32": 4}[ctype]) == size, name


def test_event_types_and_flags_match_c(c_layout):
    _, _, events, flags = c_layout
    assert {e.name: e.value for e in schema.EventType} == {n: v for n, (v, _) in events.items()}
    assert schema.EVENT_NAMES == {v: t for v, t in events.values()}
    assert schema.FLAGS == flags


def test_event_max_is_derived_from_the_event_list(c_layout):
    info = c_layout[0]
    values = sorted(e.value for e in schema.EventType)
    assert info["event_max"] == schema.EVENT_MAX == max(values)
    assert values == list(range(1, schema.EVENT_MAX + 1))     # 1..MAX without gaps


def test_counter_kinds_match_c(c_layout):
    info = c_layout[0]
    assert [(t, enum) for t, enum, _ in info["kinds"]] == [
        (t, i) for i, t in enumerate(schema.COUNTER_KINDS)]
    assert all(enum == index for _, enum, index in info["kinds"])
    assert info["nkinds"] == schema.NKINDS == 4
    assert info["ncounters"] == schema.NCOUNTERS
    assert info["key_exit_dropped"] == schema.counter_key(schema.EventType.EXIT, "dropped")
    from toolkit.backends.base import EventCounters
    assert [f.name for f in __import__("dataclasses").fields(EventCounters)] == \
        list(schema.COUNTER_KINDS)


def test_hooks_match_c(c_layout):
    info = c_layout[0]
    assert [(sym, ev) for sym, ev, _ in info["hooks"]] == [(s, e) for _, s, e in schema.HOOKS]
    assert [i for _, _, i in info["hooks"]] == list(range(len(schema.HOOKS)))
    assert info["hook_max"] == len(schema.HOOKS)


def test_filter_encoding_and_slots_match_c(c_layout):
    info = c_layout[0]
    assert info["slots"] == schema.CONFIG_SLOTS
    assert info["filter_off"] == schema.FILTER_OFF == schema.filter_encode(None)
    assert info["filter_uid0"] == schema.filter_encode(0) != schema.FILTER_OFF
    assert (info["passes_off"], info["passes_same"], info["passes_other"],
            info["passes_uid0_vs_off"]) == (1, 1, 0, 0)


def test_quota_kinds_match_c(c_layout):
    info = c_layout[0]
    assert {t: enum for t, (enum, _) in info["quotas"].items()} == schema.QUOTA_KINDS
    assert all(enum == value for enum, value in info["quotas"].values())
    assert schema.QUOTA_KINDS == {"heap": 1, "files": 2}
    assert schema.EventType.KILL == 5 and schema.EVENT_NAMES[5] == "kill"


def test_version_2_appends_the_kill_fields_after_every_version_1_field():
    v1 = schema.fields_of_version(1)
    assert schema.RECORD_VERSION == 2
    assert schema.FIELD_NAMES[:len(v1)] == v1          # appended, never reordered
    assert schema.FIELD_NAMES[len(v1):] == ["quota", "quota_value", "quota_kind", "quota_pad"]
    assert schema.fields_of_version(2) == schema.FIELD_NAMES
    with pytest.raises(ValueError):
        schema.fields_of_version(3)


def test_version_1_events_files_read_with_the_appended_fields_as_0(tmp_path):
    from toolkit.bench import ledger
    v1 = [n for n in schema.FIELD_NAMES if n in schema.fields_of_version(1)]
    assert len(v1) < len(schema.FIELD_NAMES)          # version 2 appended fields
    row = dict(record_version=1, receipt_ns=9, ts_ns=1, start_ns=2, cpu_ns=3, rss_kib=4,
               hiwater_rss_kib=5, type=4, pid=6, tgid=6, ppid=1, uid=0, cpu=0, flags=1,
               exit_code=0, comm="x")
    assert set(row) - {"record_version", "receipt_ns"} == set(v1)
    f = tmp_path / "events.csv"
    f.write_text(",".join(row) + "\n" + ",".join(map(str, row.values())) + "\n")
    ((receipt, rec),) = ledger.records_of(ledger.read_events(f))
    assert receipt == 9 and rec.pid == 6 and rec.comm == "x"
    assert (rec.quota, rec.quota_value, rec.quota_kind) == (0, 0, 0)
    f.write_text(",".join(row) + "\n" + ",".join(map(str, dict(row, record_version=7).values()))
                 + "\n")
    with pytest.raises(ValueError, match="record version 7"):
        ledger.read_events(f)


def test_version_1_reference_events_files_still_read():
    from toolkit.bench import ledger
    from toolkit.paths import RESULTS_DIR
    from toolkit.schema import RECORD_VERSION
    files = sorted((RESULTS_DIR / "reference").glob("*/events-lkm.csv*"))
    versions = set()
    for path in files:
        df = ledger.read_events(path)
        v = set(df["record_version"])
        assert len(df) and len(v) == 1 and v <= {1, RECORD_VERSION}, path
        if v == {1}:       # version 1 has no quota fields: read as 0
            assert (df["quota_kind"] == 0).all()
        versions |= v
    assert 1 in versions      # the old runs are still there, and still read


def _rec(**kw):
    base = dict(ts_ns=10**12, start_ns=5, cpu_ns=7, rss_kib=1024, hiwater_rss_kib=2048,
                type=int(schema.EventType.EXIT), pid=42, tgid=42, ppid=1, uid=1000, cpu=1,
                flags=1, exit_code=9, comm="worker", quota=0, quota_value=0, quota_kind=0,
                quota_pad=0)
    base.update(kw)
    return schema.Record(**base)


def test_proc_row_layout_matches_c(c_layout):
    info = c_layout[0]
    assert schema.PROC_VERSION == info["proc_version"]
    assert schema.PROC_ROW_SIZE == info["proc_size"] == 80
    assert schema.PROC_FIELD_NAMES == list(info["pfields"])
    offs = schema.proc_offsets()
    for name, (off, size) in info["pfields"].items():
        assert offs[name] == off, name
        ctype, count = schema.PROC_FIELD_CTYPES[name]
        assert (count or {"__u64": 8, "__u32": 4}[ctype]) == size, name
    assert schema.PROC_FLAGS == {"CPU_PARTIAL": info["proc_flag_cpu_partial"]}
    assert "CPU_PARTIAL" not in schema.FLAGS       # the record's flags stay apart


def test_proc_rows_unpack_and_reject_a_partial_row():
    import struct
    fmt = schema.PROC_STRUCT_FORMAT
    raw = (struct.pack(fmt, 5, 7_000_000, 65536, 70000, 80000, 42, 1, 4242, 3, ord("R"), 1,
                       b"busy loop") +
           struct.pack(fmt, 6, 0, 4, 4, 8, 43, 42, 0, 1, ord("S"), 0, b"x" * 16))
    a, b = schema.unpack_proc_rows(raw)
    assert a == dict(start_ns=5, cpu_ns=7_000_000, rss_kib=65536, hiwater_rss_kib=70000,
                     total_vm_kib=80000, pid=42, ppid=1, uid=4242, threads=3, state="R",
                     flags=schema.PROC_FLAGS["CPU_PARTIAL"], comm="busy loop")
    assert (b["state"], b["comm"]) == ("S", "x" * 16)
    assert schema.unpack_proc_rows(b"") == []
    with pytest.raises(ValueError, match="whole number"):
        schema.unpack_proc_rows(raw[:-1])


def test_binary_roundtrip():
    r = _rec()
    raw = schema.pack(r)
    assert len(raw) == schema.RECORD_SIZE
    assert schema.unpack(raw) == r


def test_unpack_builds_the_constructors_frozen_record():
    """unpack() fills the slots directly (for speed): it must give exactly the Record the
    constructor gives, every field, still frozen and hashable."""
    import dataclasses
    import random
    rnd = random.Random(7)
    for _ in range(200):
        raw = bytes(rnd.getrandbits(8) for _ in range(schema.RECORD_SIZE))
        values = list(schema._STRUCT.unpack_from(raw))
        for i in schema._COMM_AT:
            values[i] = schema._decode_comm(values[i])
        rec = schema.unpack(raw)
        assert rec == schema.Record(*values) and hash(rec) == hash(schema.Record(*values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.pid = 1


def test_binary_comm_full_width_and_nul_padding():
    r = _rec(comm="x" * schema.COMM_LEN)
    assert schema.unpack(schema.pack(r)).comm == "x" * schema.COMM_LEN
    raw = bytearray(schema.pack(_rec(comm="ab")))
    raw[schema.offsets()["comm"] + 3] = ord("z")  # garbage after the NUL is ignored
    assert schema.unpack(raw).comm == "ab"


@pytest.mark.parametrize("comm", ["plain", "with space", "tab\there", "new\nline", "back\\slash",
                                  "Web Content", "kworker/0:1"])
def test_text_roundtrip_with_escapes(comm):
    r = _rec(comm=comm)
    line = schema.format_line(r)
    assert "\n" not in line and line.count(" ") == len(schema.SCALAR_FIELDS)
    assert schema.parse_line(line + "\n") == r


def test_text_parses_kernel_octal_escapes():
    line = " ".join(["1"] * len(schema.SCALAR_FIELDS)) + r" a\040b\134c"
    assert schema.parse_line(line).comm == "a b\\c"


def test_text_rejects_short_lines():
    with pytest.raises(ValueError):
        schema.parse_line("1 2 3")


def test_negative_exit_code_and_event_name():
    r = _rec(exit_code=-1, type=int(schema.EventType.CLONE))
    assert schema.parse_line(schema.format_line(r)).exit_code == -1
    assert r.event == "clone" and r.key == (42, 5)
    assert schema.as_dict(r)["event"] == "clone"


QUOTA_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/types.h>
#include "toolkit_quota.h"
int main(void)
{
	printf("layout %d %llu %d %d\n", TK_QUOTA_LAYOUT,
	       (unsigned long long)TK_QUOTA_MAGIC, TK_QUOTA_ENTRIES, TK_FD_WORDS);
	printf("size %zu\n", sizeof(struct tk_quota_value));
#define V(type, name, doc) printf("value %s %zu %zu\n", #name, \
	offsetof(struct tk_quota_value, name), \
	sizeof(((struct tk_quota_value *)0)->name));
	TK_QUOTA_VALUE_FIELDS(V)
#define P(kind, sym) printf("hook %s %s kprobe\n", #kind, #sym);
#define R(kind, sys) printf("hook %s %s kretprobe\n", #kind, #sys);
	TK_QUOTA_KPROBES(P, R)
#define T(kind, tp, doc) printf("tp %s %s\n", #kind, #tp);
	TK_QUOTA_TRACEPOINTS(T)
#define C(name, index, text) printf("count %s %d\n", text, TK_QCOUNT_##name);
	TK_QUOTA_COUNTS(C)
#define M(name, index, text) printf("mark %s %d\n", text, TK_QMARK_##name);
	TK_QUOTA_MARKS(M)
	return 0;
}
"""


def test_the_quota_header_matches_c(tmp_path):
    """include/toolkit_quota.h: the map value's layout, the hook lists, the counter and
    marker slots as Python reads them (schema.QUOTA_*), held to the C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    (tmp_path / "q.c").write_text(QUOTA_C)
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(INCLUDE_DIR), "-o", str(tmp_path / "q"),
                    str(tmp_path / "q.c")], check=True, timeout=120)
    out = subprocess.run([str(tmp_path / "q")], capture_output=True, text=True, check=True,
                         timeout=30).stdout.splitlines()
    rows = [line.split() for line in out]
    layout = next(r for r in rows if r[0] == "layout")
    assert (schema.QUOTA_LAYOUT, schema.QUOTA_MAGIC, schema.QUOTA_ENTRIES,
            schema.FD_WORDS) == tuple(int(x) for x in layout[1:])
    assert schema.QUOTA_VALUE_SIZE == int(next(r for r in rows if r[0] == "size")[1])
    offsets, off = [], 0
    for name, ctype in schema.QUOTA_VALUE_FIELDS:
        size = 8 if ctype == "__u64" else 4
        offsets.append((name, off, size))
        off += size
    assert offsets == [(r[1], int(r[2]), int(r[3])) for r in rows if r[0] == "value"]
    assert list(schema.QUOTA_KPROBES) == [(r[1].lower(), r[2], r[3])
                                          for r in rows if r[0] == "hook"]
    assert [(k, t) for k, t, _ in schema.QUOTA_TRACEPOINTS] == [
        (r[1].lower(), r[2]) for r in rows if r[0] == "tp"]
    assert schema.QUOTA_COUNTS == {r[1]: int(r[2]) for r in rows if r[0] == "count"}
    assert schema.QUOTA_MARKS == {r[1]: int(r[2]) for r in rows if r[0] == "mark"}
