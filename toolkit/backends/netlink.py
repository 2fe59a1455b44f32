"""The netlink plumbing the cnproc and taskstats backends share: message headers, one
socket with a large receive buffer, reading a batch of datagrams without losing sight of
ENOBUFS, and the socket's own drop count.

The standard library's AF_NETLINK sockets and `struct` are used rather than pyroute2
(see docs/backends.md, "Kernel interfaces as backends"): both backends need every ENOBUFS of a
plain non-blocking recv (pyroute2 reads in its own asyncio loop), and pyroute2's taskstats
decoder knows one struct layout (version 15) while the kernels here send others.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct

NLMSG_HDR = struct.Struct("=IHHII")     # len, type, flags, seq, pid  (struct nlmsghdr)
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_HDR = struct.Struct("=HH")           # len, type  (struct nlattr)
NLA_TYPE_MASK = 0x3FFF                   # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def align4(n: int) -> int:
    return (n + 3) & ~3


def nlmsg(msg_type: int, payload: bytes, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, seq, pid) + payload


def split_messages(buf: bytes):
    """Yield (type, flags, seq, pid, payload) for each netlink message of one datagram.
    A truncated or malformed header raises ValueError."""
    off = 0
    while off + NLMSG_HDR.size <= len(buf):
        length, mtype, flags, seq, pid = NLMSG_HDR.unpack_from(buf, off)
        if length < NLMSG_HDR.size or off + length > len(buf):
            raise ValueError(f"netlink message length {length} at offset {off} does not fit "
                             f"a {len(buf)}-byte datagram")
        yield mtype, flags, seq, pid, bytes(buf[off + NLMSG_HDR.size:off + length])
        off += align4(length)


def nla(attr_type: int, data: bytes) -> bytes:
    raw = NLA_HDR.pack(NLA_HDR.size + len(data), attr_type) + data
    return raw + b"\0" * (align4(len(raw)) - len(raw))


def parse_attrs(buf: bytes) -> dict[int, bytes]:
    """Netlink attributes -> {type: payload} (the last of a repeated type wins)."""
    out, off = {}, 0
    while off + NLA_HDR.size <= len(buf):
        length, atype = NLA_HDR.unpack_from(buf, off)
        if length < NLA_HDR.size or off + length > len(buf):
            raise ValueError(f"netlink attribute length {length} at offset {off} does not "
                             f"fit {len(buf)} bytes")
        out[atype & NLA_TYPE_MASK] = bytes(buf[off + NLA_HDR.size:off + length])
        off += align4(length)
    return out


def check_error(payload: bytes) -> int:
    """NLMSG_ERROR payload -> its errno (0: an ack)."""
    (err,) = struct.unpack_from("=i", payload)
    return -err


class NetlinkSocket:
    """One non-blocking netlink socket with a large receive buffer."""

    def __init__(self, protocol: int, groups: int = 0, rcvbuf: int | None = None):
        """rcvbuf: bytes to ask for (the kernel doubles it); None keeps the system's
        default (net.core.rmem_default), what a consumer that does not ask gets."""
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol)
        try:
            if rcvbuf:   # root may exceed net.core.rmem_max; else the capped option
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)   # SO_RCVBUFFORCE
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, groups))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[0]
        self.inode = os.fstat(self.sock.fileno()).st_ino
        self.enobufs = 0          # recv() calls that returned ENOBUFS (>= 1 message lost)

    @property
    def rcvbuf(self) -> int:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def recv_batch(self, timeout: float, limit: int = 4096) -> list[bytes]:
        """Wait up to timeout for datagrams; return what is queued (at most `limit`).
        ENOBUFS (the kernel could not queue some message for us) is counted, not raised."""
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return self.recv_ready(limit) if r else []

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_ready(self, limit: int = 4096) -> list[bytes]:
        """The datagrams queued now (at most `limit`), without waiting; ENOBUFS counted."""
        out: list[bytes] = []
        while len(out) < limit:
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self.enobufs += 1
        return out

    def drops(self) -> int | None:
        """sk_drops of this socket (the Drops column of /proc/net/netlink): messages the
        kernel could not queue because the receive buffer was full."""
        return socket_drops(self.inode)

    def close(self) -> None:
        self.sock.close()


def parse_proc_net_netlink(text: str) -> dict[int, int]:
    """/proc/net/netlink -> {inode: drops}."""
    lines = text.splitlines()
    if not lines:
        return {}
    head = lines[0].split()
    try:
        di, ii = head.index("Drops"), head.index("Inode")
    except ValueError:
        return {}
    out = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > max(di, ii):
            out[int(parts[ii])] = int(parts[di])
    return out


def socket_drops(inode: int) -> int | None:
    try:
        with open("/proc/net/netlink") as f:
            return parse_proc_net_netlink(f.read()).get(inode)
    except OSError:
        return None
