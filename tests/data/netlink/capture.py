"""Re-capture the recorded messages in this directory (root, natively):
    .venv/bin/python tests/data/netlink/capture.py
One child forks, execs `sh -c 'exit 5'` ... see the comments; each file holds one raw
message or record per line, as hex, with the child's pid on the first line."""
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[2]))

from toolkit.backends import acct, cnproc, taskstats  # noqa: E402

c = cnproc.CnprocBackend(typed=False)   # one socket: every type, in sequence
t = taskstats.TaskstatsBackend()
a = acct.AcctBackend()
for b in (c, t, a):
    b.start()
pid = os.fork()
if pid == 0:   # 8 MiB touched, then exec a shell that exits 5
    x = bytearray(8 << 20)
    for i in range(0, len(x), 4096):
        x[i] = 1
    os.execvp("sh", ["sh", "-c", "exit 5"])
os.waitpid(pid, 0)
pid2 = os.fork()
if pid2 == 0:  # fork without exec, exit 3
    os._exit(3)
os.waitpid(pid2, 0)
time.sleep(0.2)
cn = [d.hex() for d in c.socks[cnproc.UNTYPED].recv_batch(0.5)]
ts = [d.hex() for d in t.sock.recv_batch(0.5)]
raw = open(a.path, "rb").read()
ac = [raw[i:i + 64].hex() for i in range(0, len(raw), 64)]
for b in (c, t, a):
    b.stop()
for name, lines in (("cnproc.hex", cn), ("taskstats.hex", ts), ("acct.hex", ac)):
    (HERE / name).write_text(f"# pids {pid} {pid2}\n" + "\n".join(lines) + "\n")
print(pid, pid2, len(cn), len(ts), len(ac))
