#!/bin/bash
# load/unload the module N times while openat, fork/exit, mmap/brk/dup run on both CPUs
N=${1:-15}
cd "$(dirname "$0")/../../.."   # the checkout
.venv/bin/toolkit lkm load >/dev/null || exit 1
.venv/bin/toolkit lkm unload >/dev/null
KO=$(.venv/bin/python -c "from toolkit.backends import lkm; print(lkm.build())"); echo "ko=$KO"
( while :; do cat /proc/self/status >/dev/null; /bin/true; done ) &
L1=$!
python3 -c '
import os, mmap
while True:
    fd = os.open("/etc/hostname", os.O_RDONLY); os.dup2(fd, 50); os.close(fd); os.close(50)
    m = mmap.mmap(-1, 1<<20); m.close()
' &
L2=$!
for i in $(seq 1 $N); do
  insmod $KO || { echo "insmod failed at $i"; break; }
  sleep 0.5
  rmmod toolkit_lkm || { echo "rmmod failed at $i"; break; }
  echo "cycle $i ok"
done
kill $L1 $L2
dmesg | grep -E "BUG|Oops|WARN|Failed|RIP|Call Trace" | head -20
echo "dmesg lines with problems: $(dmesg | grep -cE "BUG|Oops|WARNING|Failed to")"
