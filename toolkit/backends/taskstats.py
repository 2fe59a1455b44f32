"""taskstats over generic netlink: the kernel's own per-exit accounting (what atop uses).

A listener registers for a CPU mask (TASKSTATS_CMD_ATTR_REGISTER_CPUMASK); from then on
every task exiting on those CPUs sends it one TASKSTATS_CMD_NEW message from do_exit
(kernel/taskstats.c): a struct taskstats with pid, ppid, uid, comm, exit code, user and
system time, peak RSS (hiwater_rss) and peak VM, straight from the kernel's accounting.
One message per exiting thread; the backend turns the thread-group leader's into the
process's exit record. A message names the thread group only when the group's last thread
exits (TASKSTATS_TYPE_AGGR_TGID); a thread that exits before the rest of its group is
indistinguishable here from a single-threaded process and yields a record of its own
(the struct's ac_tgid, version 11+, would tell; its offset moves with the version, so it
is not read yet). The bench's storm children are single-threaded unless --threads.

What it cannot see: forks and execs (it only reports exits), the event's time (ts_ns is
the receipt time, see Backend.event_time), the task's monotonic start time (only
ac_btime, in wall-clock seconds), RSS at exit (peak only).

Losses: taskstats unicasts to each listener; a full receive buffer makes the kernel
drop the message and count it in the socket's sk_drops (/proc/net/netlink, Drops) and
recv return ENOBUFS. Every such message was an exit, so the drops are exit drops.
"""
from __future__ import annotations

import os
import struct
import time

from .. import schema
from .base import Backend, BackendError, Snapshot, Stats, event_counters, proc_snapshot
from .netlink import (NLMSG_ERROR, NetlinkSocket, check_error, nla, nlmsg, parse_attrs,
                      split_messages)

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
GENL_HDR = struct.Struct("=BBH")             # cmd, version, reserved
NLM_F_REQUEST = 1

TASKSTATS_CMD_GET, TASKSTATS_CMD_NEW = 1, 2
TASKSTATS_TYPE_PID, TASKSTATS_TYPE_TGID, TASKSTATS_TYPE_STATS = 1, 2, 3
TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID = 4, 5
CMD_ATTR_REGISTER_CPUMASK, CMD_ATTR_DEREGISTER_CPUMASK = 3, 4

# struct taskstats (include/uapi/linux/taskstats.h). Version 15 (6.16/6.17) inserted
# max/min delay fields into the delay block; version 16 moved them to the end again, so
# every other version has the classic prefix read here. The offsets were checked
# against messages captured on 6.18 (tests/data/taskstats).
_HEAD = struct.Struct("=HxxIBB")             # version, ac_exitcode, ac_flag, ac_nice
_DELAY_BLOCK = 8 * 8                         # cpu_count .. cpu_run_virtual_total
_V15_EXTRA = 6 * 8                           # {cpu,blkio,swapin}_delay_{max,min}
_TAIL = struct.Struct("=32sB3x4xIIIII4xQQQQQQQQQ")
# ac_comm, ac_sched, pad, (align 8), ac_uid, ac_gid, ac_pid, ac_ppid, ac_btime, (align 8),
# ac_etime, ac_utime, ac_stime, ac_minflt, ac_majflt, coremem, virtmem, hiwater_rss,
# hiwater_vm
AFORK = 0x01


def stats_offset(version: int) -> int:
    return 16 + _DELAY_BLOCK + (_V15_EXTRA if version == 15 else 0)


def parse_stats(buf: bytes) -> dict:
    """struct taskstats -> the fields the toolkit uses (KiB for memory, us for times)."""
    if len(buf) < _HEAD.size:
        raise ValueError(f"struct taskstats of {len(buf)} bytes is too short")
    version, exitcode, flag, _nice = _HEAD.unpack_from(buf)
    off = stats_offset(version)
    if len(buf) < off + _TAIL.size:
        raise ValueError(f"struct taskstats version {version} of {len(buf)} bytes is "
                         f"too short for its fields")
    (comm, _sched, uid, _gid, pid, ppid, btime, etime, utime, stime, _minflt, _majflt,
     _coremem, _virtmem, hiwater_rss, hiwater_vm) = _TAIL.unpack_from(buf, off)
    return {"version": version, "exit_code": exitcode, "flag": flag,
            "comm": comm.split(b"\0", 1)[0].decode("utf-8", "replace"), "uid": uid,
            "pid": pid, "ppid": ppid, "btime_s": btime, "etime_us": etime,
            "utime_us": utime, "stime_us": stime, "hiwater_rss_kib": hiwater_rss,
            "hiwater_vm_kib": hiwater_vm}


def parse_new(payload: bytes) -> list[tuple[str, int, dict]]:
    """One TASKSTATS_CMD_NEW message (after the netlink header) -> [(kind, id, stats)],
    kind "pid" (one thread) or "tgid" (the whole group, when its last thread exits)."""
    if len(payload) < GENL_HDR.size:
        raise ValueError("generic netlink message too short")
    cmd, _v, _r = GENL_HDR.unpack_from(payload)
    if cmd != TASKSTATS_CMD_NEW:
        raise ValueError(f"not a TASKSTATS_CMD_NEW message (cmd {cmd})")
    out = []
    for atype, data in parse_attrs(payload[GENL_HDR.size:]).items():
        if atype not in (TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID):
            continue
        inner = parse_attrs(data)
        key = TASKSTATS_TYPE_PID if atype == TASKSTATS_TYPE_AGGR_PID else TASKSTATS_TYPE_TGID
        if key not in inner or TASKSTATS_TYPE_STATS not in inner:
            raise ValueError("taskstats aggregate without id or stats")
        ident = struct.unpack_from("=I", inner[key])[0]
        out.append(("pid" if key == TASKSTATS_TYPE_PID else "tgid", ident,
                    parse_stats(inner[TASKSTATS_TYPE_STATS])))
    return out


def to_record(tid: int, st: dict, ts_ns: int, tgid: int | None = None):
    """A thread's exit stats -> an exit Record (tgid: the thread group, if known)."""
    return schema.Record(
        ts_ns=ts_ns, start_ns=0, cpu_ns=(st["utime_us"] + st["stime_us"]) * 1000,
        rss_kib=0, hiwater_rss_kib=st["hiwater_rss_kib"], type=int(schema.EventType.EXIT),
        pid=tid, tgid=tgid if tgid is not None else st["pid"], ppid=st["ppid"],
        uid=st["uid"], cpu=0, flags=0, exit_code=st["exit_code"],
        comm=st["comm"][:schema.COMM_LEN])


def cpu_mask() -> str:
    n = os.cpu_count() or 1
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            return f.read().strip()
    except OSError:
        return f"0-{n - 1}"


class TaskstatsBackend(Backend):
    name = "taskstats"
    doctor_needs = ("root", "taskstats")
    provides = frozenset({"ts_ns", "cpu_ns", "hiwater_rss_kib", "type", "pid", "tgid",
                          "ppid", "uid", "exit_code", "comm"})
    event_time = "receipt"
    event_types = frozenset({"exit"})

    def __init__(self, uid: int | None = None, rcvbuf: int | None = None, **options):
        super().__init__(uid=uid, **options)
        self.rcvbuf = rcvbuf
        self.sock: NetlinkSocket | None = None
        self.family: int | None = None
        self.mask = cpu_mask()
        self.reset_stats()

    # ------------------------------------------------------------ genetlink plumbing
    def _request(self, sock: NetlinkSocket, msg_type: int, cmd: int, attrs: bytes,
                 expect_reply: bool) -> bytes | None:
        sock.send(nlmsg(msg_type, GENL_HDR.pack(cmd, 1, 0) + attrs, flags=NLM_F_REQUEST | 4,
                        seq=1))       # NLM_F_ACK: errors come back
        deadline = time.monotonic() + 2
        reply = None
        while time.monotonic() < deadline:
            for dgram in sock.recv_batch(0.2):
                for mtype, _f, _s, _p, payload in split_messages(dgram):
                    if mtype == NLMSG_ERROR:
                        err = check_error(payload)
                        if err:
                            raise OSError(err, os.strerror(err))
                        return reply
                    if mtype == msg_type or mtype == GENL_ID_CTRL:
                        reply = payload
        if expect_reply and reply is None:
            raise OSError(f"no reply to generic netlink command {cmd}")
        return reply

    def _family_id(self, sock: NetlinkSocket) -> int:
        payload = self._request(sock, GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                                nla(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"), True)
        attrs = parse_attrs(payload[GENL_HDR.size:])
        return struct.unpack_from("=H", attrs[CTRL_ATTR_FAMILY_ID])[0]

    def _mask(self, attr: int) -> None:
        self._request(self.sock, self.family, TASKSTATS_CMD_GET,
                      nla(attr, self.mask.encode() + b"\0"), False)

    # ------------------------------------------------------------ Backend
    def start(self) -> None:
        if os.geteuid() != 0:
            raise BackendError("registering a taskstats listener needs root (CAP_NET_ADMIN)",
                               "run as root")
        try:
            kw = {"rcvbuf": self.rcvbuf} if self.rcvbuf else {}
            self.sock = NetlinkSocket(NETLINK_GENERIC, **kw)
            self.family = self._family_id(self.sock)
            self._mask(CMD_ATTR_REGISTER_CPUMASK)
        except (OSError, KeyError) as e:
            self.stop()
            raise BackendError(f"cannot register a taskstats listener: {e}",
                               "a kernel with CONFIG_TASKSTATS=y, run as root") from None
        self._drops0 = self.sock.drops() or 0

    def read(self, timeout: float) -> list:
        if self.sock is None:
            raise BackendError("taskstats backend not started")
        out = []
        batch = self.sock.recv_batch(timeout)
        now = time.monotonic_ns()
        for dgram in batch:
            for mtype, _f, _s, _p, payload in split_messages(dgram):
                if mtype != self.family:
                    continue
                self._messages += 1
                try:
                    parts = parse_new(payload)
                except (ValueError, struct.error):
                    self._malformed += 1
                    continue
                for kind, ident, st in parts:
                    if kind != "pid":
                        continue       # the group aggregate repeats the last thread's exit
                    self._threads += 1
                    tgid = self._tgid(parts, st)
                    if tgid != ident:
                        continue       # a thread of a group that lives on (or not the leader)
                    rec = to_record(ident, st, now, tgid)
                    if self._deliver(rec):
                        out.append(rec)
        return out

    @staticmethod
    def _tgid(parts, st) -> int:
        for kind, ident, _ in parts:
            if kind == "tgid":
                return ident
        return st["pid"]

    def _deliver(self, rec) -> bool:
        c = self._counters["exit"]
        c.seen += 1
        if (self.uid_filter is not None and rec.uid != self.uid_filter) or \
                (self.ppid_filter is not None and rec.ppid != self.ppid_filter):
            c.filtered += 1
            return False
        c.delivered += 1
        return True

    def set_ppid_filter(self, ppid: int | None) -> None:
        """A user-space filter on ac_ppid; drops cannot be filtered (counted whatever
        process they were)."""
        self.ppid_filter = ppid

    def snapshot(self) -> Snapshot:
        return proc_snapshot()

    def stats(self) -> Stats:
        drops = None if self.sock is None else self.sock.drops()
        lost = 0 if drops is None else drops - self._drops0
        self._counters["exit"].dropped = lost
        self._counters["exit"].seen = self._counters["exit"].delivered + \
            self._counters["exit"].filtered + lost
        return Stats(backend=self.name, events=self._counters, lost_in_transport=lost,
                     drop_reason="socket_drops",
                     extra={"socket_drops": lost, "enobufs": self.sock.enobufs if self.sock
                            else 0, "messages": self._messages, "thread_exits": self._threads,
                            "malformed": self._malformed, "cpumask": self.mask,
                            "rcvbuf": self.sock.rcvbuf if self.sock else None,
                            "socket_drops_readable": drops is not None, "pid": os.getpid()})

    def reset_stats(self) -> None:
        self._counters = event_counters()
        self._messages = self._threads = self._malformed = 0
        if getattr(self, "sock", None) is not None:
            self.sock.enobufs = 0
            self._drops0 = self.sock.drops() or 0

    def stop(self) -> None:
        if self.sock is not None:
            if self.family is not None:
                try:
                    self._mask(CMD_ATTR_DEREGISTER_CPUMASK)
                except OSError:
                    pass
            self.sock.close()
            self.sock = None
