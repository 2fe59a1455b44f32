# sourced by the three scripts: load on both vCPUs (a fork loop; openat, dup2, mmap in a
# loop); `stop_load` ends it and prints the dmesg problem count
( while :; do cat /proc/self/status >/dev/null; /bin/true; done ) &
L1=$!
python3 -c '
import os, mmap
while True:
    fd = os.open("/etc/hostname", os.O_RDONLY); os.dup2(fd, 50); os.close(fd); os.close(50)
    m = mmap.mmap(-1, 1<<20); m.close()
' &
L2=$!
stop_load() {
  kill $L1 $L2
  echo "dmesg lines with problems: $(dmesg | grep -cE "BUG|Oops|WARNING|Failed to")"
}
