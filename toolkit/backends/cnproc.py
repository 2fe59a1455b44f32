"""The proc connector (NETLINK_CONNECTOR, CN_IDX_PROC): what forkstat and several agents
use. The kernel multicasts one message per fork, exec and exit (and uid, gid, sid,
ptrace, comm, coredump changes) to every listener; nothing to load or compile.

What it carries: the event's CLOCK_MONOTONIC time (ktime_get_ns), the CPU, pid and tgid;
fork: the parent's pid and tgid; exit: the wait(2) status (task->exit_code) and the
parent's tgid, or 0 when the parent has already reaped the child (proc_exit_connector
runs after exit_notify and reads the parent only while pid_alive(): a race the kernel
leaves open, seen in CI on 6.18). What it does not: uid, comm, start time, CPU time, memory (the backend
says so in `provides`; the report shows "-"), and exec names no parent.

Losses, counted exactly, two ways depending on the kernel:
  * typed (kernels >= 6.6, whose connector takes a `struct proc_input` with an event-type
    filter): one socket per event type (fork, exec, exit), each subscribed to its type
    only, so each socket's own drop count (sk_drops, the Drops column of
    /proc/net/netlink: messages the kernel could not queue, receive buffer full) is the
    number of events of that type lost;
  * untyped (older kernels, e.g. the lab's 6.1, which ignore a filter): one socket for
    everything, its sk_drops the count. Each message also carries a per-CPU sequence
    number (cn_msg.seq from a per-CPU counter in kernel/connector/cn_proc.c;
    proc_event.cpu names the CPU), so a gap in a CPU's sequence is a number of messages
    lost: kept as a cross-check, and the count if /proc/net/netlink cannot be read. Gaps
    cannot see losses after the last message received from a CPU (a lost tail), which
    is why sk_drops comes first. A lost message's type is unknown, so these drops are
    counted as `untyped` (the bench adds them to the drops); they may also be events the
    toolkit has no record for (comm, uid, ...).
ENOBUFS returned by recv is counted beside them (one ENOBUFS: at least one loss).
"""
from __future__ import annotations

import os
import select
import struct
import time

from .. import schema, sysinfo
from .base import (UNTYPED, Backend, BackendError, Snapshot, Stats, deliver_children,
                   event_counters, proc_snapshot)
from .netlink import NLMSG_DONE, NetlinkSocket, nlmsg, split_messages

NETLINK_CONNECTOR = 11
CN_IDX_PROC, CN_VAL_PROC = 1, 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2

CN_MSG = struct.Struct("=IIIIHH")            # idx, val, seq, ack, len, flags (struct cn_msg)
EVENT_HDR = struct.Struct("=IIQ")            # what, cpu, timestamp_ns (struct proc_event)
FORK_DATA = struct.Struct("=IIII")           # parent pid, parent tgid, child pid, child tgid
EXEC_DATA = struct.Struct("=II")             # pid, tgid
EXIT_DATA = struct.Struct("=IIIIII")         # pid, tgid, exit_code, exit_signal, ppid, ptgid

PROC_EVENT_NONE, PROC_EVENT_FORK, PROC_EVENT_EXEC = 0, 0x1, 0x2
PROC_EVENT_EXIT = 0x80000000
TYPED = {"fork": PROC_EVENT_FORK, "exec": PROC_EVENT_EXEC, "exit": PROC_EVENT_EXIT}
DRAIN_ORDER = ("exit", "exec", "fork", UNTYPED)     # see CnprocBackend._drain
OTHER_EVENTS = {0x4: "uid", 0x40: "gid", 0x80: "sid", 0x100: "ptrace", 0x200: "comm",
                0x40000000: "coredump"}


def control_message(op: int = PROC_CN_MCAST_LISTEN, event_type: int | None = None) -> bytes:
    """The netlink message that subscribes (or unsubscribes) a socket; with event_type,
    a struct proc_input that lets only that type through (kernels >= 6.6)."""
    payload = struct.pack("=I", op) if event_type is None else \
        struct.pack("=II", op, event_type)
    return nlmsg(NLMSG_DONE, CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0)
                 + payload, pid=os.getpid())


def parse_event(payload: bytes):
    """One connector message (after the netlink header) ->
    (seq, what, cpu, Record or None). None for the subscription ack, a thread's exit and
    event types the toolkit has no record for (uid, gid, comm, ...). Raises ValueError if
    malformed."""
    if len(payload) < CN_MSG.size + EVENT_HDR.size:
        raise ValueError(f"connector message of {len(payload)} bytes is too short")
    idx, val, seq, _ack, length, _flags = CN_MSG.unpack_from(payload)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        raise ValueError(f"not a proc connector message (idx {idx}, val {val})")
    data = payload[CN_MSG.size:CN_MSG.size + length]
    if len(data) < EVENT_HDR.size:
        raise ValueError(f"proc_event of {len(data)} bytes is too short")
    what, cpu, ts = EVENT_HDR.unpack_from(data)
    body = data[EVENT_HDR.size:]
    rec = None
    common = dict(ts_ns=ts, start_ns=0, cpu_ns=0, rss_kib=0, hiwater_rss_kib=0, uid=0,
                  cpu=cpu, flags=0, exit_code=0, comm="")
    if what == PROC_EVENT_FORK:
        _ppid, ptgid, pid, tgid = FORK_DATA.unpack_from(body)
        etype = schema.EventType.FORK if pid == tgid else schema.EventType.CLONE
        rec = schema.Record(type=int(etype), pid=pid, tgid=tgid, ppid=ptgid, **common)
    elif what == PROC_EVENT_EXEC:
        pid, tgid = EXEC_DATA.unpack_from(body)
        rec = schema.Record(type=int(schema.EventType.EXEC), pid=pid, tgid=tgid, ppid=0,
                            **common)
    elif what == PROC_EVENT_EXIT:
        pid, tgid, code, _sig, _ppid, ptgid = EXIT_DATA.unpack_from(body)
        if pid != tgid:      # a thread's exit: not a process exit (as exitsnoop defines it)
            return seq, what, cpu, None
        common["exit_code"] = code
        rec = schema.Record(type=int(schema.EventType.EXIT), pid=pid, tgid=tgid, ppid=ptgid,
                            **common)
    return seq, what, cpu, rec


class SeqTracker:
    """Per-CPU sequence numbers -> messages lost. The first message seen on a CPU sets
    its base; each later gap (seq - last - 1) counts as lost. A sequence going
    backwards (u32 wrap excepted) is counted in `reordered`, not as a loss."""

    def __init__(self):
        self.last: dict[int, int] = {}
        self.lost = 0
        self.reordered = 0

    def see(self, cpu: int, seq: int) -> int:
        prev = self.last.get(cpu)
        self.last[cpu] = seq
        if prev is None:
            return 0
        gap = (seq - prev - 1) & 0xFFFFFFFF
        if gap >= 0x80000000:        # went backwards
            self.reordered += 1
            return 0
        self.lost += gap
        return gap


class CnprocBackend(Backend):
    name = "cnproc"
    doctor_needs = ("root", "proc connector")
    provides = frozenset({"ts_ns", "type", "pid", "tgid", "ppid", "cpu", "exit_code"})

    def __init__(self, uid: int | None = None, rcvbuf: int | None = None,
                 typed: bool | None = None, **options):
        """rcvbuf: receive buffer bytes per socket (None: the system default);
        typed: one filtered socket per event type (None: where the kernel can)."""
        super().__init__(uid=uid, **options)
        if uid is not None:
            raise BackendError("the cnproc backend cannot filter by uid: the proc connector "
                               "does not carry uids")
        self.rcvbuf = rcvbuf
        self.typed_wanted = typed
        self.socks: dict[str, NetlinkSocket] = {}
        self.typed = False
        self._children: set[int] = set()
        self._drops0: dict[str, int] = {}
        self.reset_stats()

    def _subscribe(self, event_type: int | None) -> NetlinkSocket:
        s = NetlinkSocket(NETLINK_CONNECTOR, groups=CN_IDX_PROC, rcvbuf=self.rcvbuf)
        try:
            s.send(control_message(PROC_CN_MCAST_LISTEN, event_type))
        except OSError:
            s.close()
            raise
        return s

    @staticmethod
    def kernel_filters() -> bool:
        """Does this kernel's connector take a struct proc_input (an event-type filter)?
        Added in 6.6; an older kernel ignores one silently (and sends nothing), and a
        filtered subscription is not acknowledged (the ack is filtered too), so the
        version decides."""
        return sysinfo.kernel_version(sysinfo.release()) >= (6, 6)

    def start(self) -> None:
        if os.geteuid() != 0:
            raise BackendError("the proc connector needs root (CAP_NET_ADMIN)",
                               "run as root")
        try:
            if self.typed_wanted and not self.kernel_filters():
                raise BackendError("this kernel's proc connector has no event-type filter "
                                   "(added in 6.6)", "leave typed unset")
            if self.typed_wanted is not False and self.kernel_filters():
                for t, ev in TYPED.items():
                    self.socks[t] = self._subscribe(ev)
                self.typed = True
            if not self.typed:
                self.socks[UNTYPED] = self._subscribe(None)
        except OSError as e:
            self.stop()
            raise BackendError(f"cannot subscribe to the proc connector: {e}",
                               "a kernel with CONFIG_PROC_EVENTS=y, run as root") from None
        self._drops0 = {k: s.drops() or 0 for k, s in self.socks.items()}

    def read(self, timeout: float) -> list:
        if not self.socks:
            raise BackendError("cnproc backend not started")
        recs = []
        t0 = time.perf_counter_ns()
        ready, _, _ = select.select(list(self.socks.values()), [], [], max(0.0, timeout))
        batch = self._drain() if ready else []
        t1 = time.perf_counter_ns()
        for dgram in batch:
            for _t, _f, _s, _p, payload in split_messages(dgram):
                self._messages += 1
                try:
                    seq, what, cpu, rec = parse_event(payload)
                except (ValueError, struct.error):
                    self._malformed += 1
                    continue
                if what == PROC_EVENT_NONE:
                    continue         # a subscription ack
                if not self.typed:
                    self._seq.see(cpu, seq)
                if rec is None:
                    name = "thread exit" if what == PROC_EVENT_EXIT else \
                        OTHER_EVENTS.get(what, hex(what))
                    self._other[name] = self._other.get(name, 0) + 1
                    continue
                recs.append(rec)
        if len(self.socks) > 1:
            recs.sort(key=lambda r: r.ts_ns)
        out = [r for r in recs if self._deliver(r)]     # in event order: forks first
        self._parse_ns += time.perf_counter_ns() - t1
        self._recv_ns += t1 - t0
        return out

    def _drain(self) -> list[bytes]:
        """Every socket's queued datagrams, effects before causes: exits, execs, then
        forks (drained to the end). A child's fork is queued before its exit, so an exit
        read here has its fork in this batch or an earlier one, and the parent filter,
        which follows children from their fork, never misses a child's exec or exit
        (draining forks first lost the exits of children forked during the drain)."""
        out = []
        for key in DRAIN_ORDER:
            s = self.socks.get(key)
            if s is not None:
                out.extend(s.recv_ready(limit=1 << 30 if key == "fork" else 4096))
        return out

    def _deliver(self, rec) -> bool:
        return deliver_children(rec, self._counters[rec.event], self.ppid_filter,
                                self._children)

    def set_ppid_filter(self, ppid: int | None) -> None:
        """A user-space filter (the connector has none for parents): records of `ppid`'s
        children, followed from their fork; everything else counts as filtered. Drops
        cannot be filtered: they are counted whatever process they were."""
        self.ppid_filter = ppid
        self._children = set()

    def snapshot(self) -> Snapshot:
        return proc_snapshot()

    def _socket_drops(self) -> dict[str, int | None]:
        out = {}
        for k, s in self.socks.items():
            d = s.drops()
            out[k] = None if d is None else d - self._drops0.get(k, 0)
        return out

    def stats(self) -> Stats:
        sk = self._socket_drops()
        if self.typed:
            # a fork socket's lost message may have been a thread's clone: counted as fork
            for t in TYPED:
                c = self._counters[t]
                c.dropped = sk.get(t) or 0
                c.seen = c.delivered + c.filtered + c.dropped
        else:
            # sk_drops counts every message the kernel could not queue; sequence gaps see
            # only losses between two received messages of a CPU (not a lost tail), so
            # they are the fallback when /proc/net/netlink cannot be read
            u = self._counters[UNTYPED]
            u.dropped = u.seen = sk[UNTYPED] if sk.get(UNTYPED) is not None else self._seq.lost
        lost = sum(c.dropped for c in self._counters.values())
        by_seq = not self.typed and sk.get(UNTYPED) is None
        return Stats(backend=self.name, events=self._counters, lost_in_transport=lost,
                     drop_reason="seq_gaps" if by_seq else "socket_drops",
                     extra={"mode": "typed sockets (sk_drops per type)" if self.typed else
                            "one socket (per-CPU sequence gaps, untyped)",
                            "seq_lost": self._seq.lost, "seq_reordered": self._seq.reordered,
                            "enobufs": sum(s.enobufs for s in self.socks.values()),
                            "socket_drops": sk,
                            "rcvbuf": max((s.rcvbuf for s in self.socks.values()), default=None),
                            "messages": self._messages, "recv_ns": self._recv_ns,
                            "parse_ns": self._parse_ns, "malformed": self._malformed,
                            "other_events": dict(self._other), "pid": os.getpid()})

    def reset_stats(self) -> None:
        self._counters = event_counters(untyped=True)
        self._seq = SeqTracker()
        self._messages = self._malformed = 0
        self._recv_ns = self._parse_ns = 0
        self._other: dict[str, int] = {}
        for k, s in self.socks.items():
            s.enobufs = 0
            self._drops0[k] = s.drops() or 0

    def stop(self) -> None:
        for s in self.socks.values():
            try:
                s.send(control_message(PROC_CN_MCAST_IGNORE))
            except OSError:
                pass
            s.close()
        self.socks = {}
        self.typed = False
