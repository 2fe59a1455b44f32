#!/bin/bash
# the same kprobes through tracefs (no module): add, enable, disable, remove, N times under load
N=${1:-20}
T=/sys/kernel/tracing
. "$(dirname "$0")/load.sh"
for i in $(seq 1 $N); do
  echo > $T/kprobe_events
  for f in fd_install do_exit wake_up_new_task setup_new_exec; do echo "p:p_$f $f" >> $T/kprobe_events; done
  for f in __x64_sys_dup2 __x64_sys_dup3 __x64_sys_mmap __x64_sys_brk __x64_sys_munmap; do echo "r:r_$f $f" >> $T/kprobe_events; done
  echo 1 > $T/events/kprobes/enable
  sleep 0.5
  echo 0 > $T/events/kprobes/enable
  echo "cycle $i ok"
done
echo > $T/kprobe_events
stop_load
