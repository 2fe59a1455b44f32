"""Quota parsers and the CLI's refusals, natively (the enforcement is tests/kernel/test_quota.py)."""
import os

import pytest
from click.testing import CliRunner

from toolkit import quota
from toolkit.backends import lkm_quota
from toolkit.cli import main

TABLE = """# probes_missed 2
# pid start_ns comm heap heap_quota files files_quota state
271 14489739891 python3 6029312 67108864 7 3 killed-files
300 15000000000 a\\040b 135168 0 4 100 tracking
"""


@pytest.mark.parametrize("text,n", [("1", 1), ("64M", 64 << 20), ("64m", 64 << 20),
                                    ("2G", 2 << 30), ("512K", 512 << 10), ("3MiB", 3 << 20),
                                    ("1T", 1 << 40), (" 7 ", 7)])
def test_parse_size(text, n):
    assert quota.parse_size(text) == n


@pytest.mark.parametrize("text", ["0", "0M", "-1", "-5M", "abc", "", "1.5M", "12Q", "M",
                                  "99999999999999999999", "9000000T"])
def test_parse_size_refuses(text):
    with pytest.raises(quota.QuotaError):
        quota.parse_size(text)


def test_parse_count():
    assert quota.parse_count("100") == 100
    for bad in ("0", "-3", "x", "1.5", "2147483648", ""):
        with pytest.raises(quota.QuotaError):
            quota.parse_count(bad)


def test_parse_table():
    rows, missed = lkm_quota.parse_table(TABLE)
    assert missed == 2 and [r.pid for r in rows] == [271, 300]
    assert rows[0].state == "killed-files" and rows[0].files_quota == 3
    assert rows[1].comm == "a b" and rows[1].heap_quota == 0
    assert lkm_quota.parse_table(TABLE.splitlines()[1] + "\n") == ([], 0)
    with pytest.raises(ValueError):
        lkm_quota.parse_table("# pid comm\n")
    with pytest.raises(ValueError):
        lkm_quota.parse_table(TABLE + "1 2 3\n")


def test_set_command():
    assert lkm_quota.set_command(5, 1024, None) == "set 5 heap=1024"
    assert lkm_quota.set_command(5, None, 9) == "set 5 files=9"
    assert lkm_quota.set_command(5, 1, 2) == "set 5 heap=1 files=2"
    with pytest.raises(quota.QuotaError):
        lkm_quota.set_command(5, None, None)


def test_check_target_refuses_init_self_kthread_and_missing():
    for pid, text in ((1, "pid 1"), (os.getpid(), "toolkit process itself"),
                      (2, "kernel thread"), (4194300, "no process"), (0, "not a process")):
        with pytest.raises(quota.QuotaError, match=text):
            quota.check_target(pid)


def test_exit_code_and_status():
    assert quota.exit_code(9) == 137 and quota.describe_status(9) == "killed by SIGKILL"
    assert quota.exit_code(3 << 8) == 3 and quota.describe_status(3 << 8) == "exited with status 3"


@pytest.mark.parametrize("args,text", [
    (["set", "--files", "3", "1"], "pid 1"),
    (["set", "--heap", "0", "999"], "out of range"),
    (["set", "--heap", "-1M", "999"], "not a size"),
    (["set", "--files", "1e3", "999"], "not a whole number"),
    (["set", "999"], "no quota given"),
    (["run", "--heap", "1X", "--", "true"], "not a size"),
    (["run", "--files", "2", "--backend", "ps", "--", "true"], "Invalid value"),
])
def test_cli_refuses_bad_input_without_a_traceback(args, text):
    r = CliRunner().invoke(main, ["quota", *args])
    assert r.exit_code == 2, r.output
    assert text in r.output and "Traceback" not in r.output
