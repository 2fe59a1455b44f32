#!/bin/bash
# load/unload the module N times while openat, fork/exit, mmap/brk/dup run on both CPUs
N=${1:-15}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."   # the checkout
.venv/bin/toolkit lkm load >/dev/null || exit 1
.venv/bin/toolkit lkm unload >/dev/null
KO=$(.venv/bin/python -c "from toolkit.backends import lkm; print(lkm.build())"); echo "ko=$KO"
. "$here/load.sh"
for i in $(seq 1 $N); do
  insmod $KO || { echo "insmod failed at $i"; break; }
  sleep 0.5
  rmmod toolkit_lkm || { echo "rmmod failed at $i"; break; }
  echo "cycle $i ok"
done
stop_load
