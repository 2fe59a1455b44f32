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
                    str(d / "probe.c")], check=True)
    out = subprocess.run([str(d / "probe")], capture_output=True, text=True, check=True).stdout
    fields, events, flags, info = {}, {}, {}, {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "field":
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


def _rec(**kw):
    base = dict(ts_ns=10**12, start_ns=5, cpu_ns=7, rss_kib=1024, hiwater_rss_kib=2048,
                type=int(schema.EventType.EXIT), pid=42, tgid=42, ppid=1, uid=1000, cpu=1,
                flags=1, exit_code=9, comm="worker")
    base.update(kw)
    return schema.Record(**base)


def test_binary_roundtrip():
    r = _rec()
    raw = schema.pack(r)
    assert len(raw) == schema.RECORD_SIZE
    assert schema.unpack(raw) == r


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
