#!/bin/bash
# the function tracer on the same functions, switched on and off N times under load (no kprobes)
N=${1:-20}
T=/sys/kernel/tracing
. "$(dirname "$0")/load.sh"
printf "fd_install\ndo_exit\nwake_up_new_task\nsetup_new_exec\n__x64_sys_dup2\n__x64_sys_dup3\n__x64_sys_mmap\n__x64_sys_brk\n__x64_sys_munmap\n" > $T/set_ftrace_filter
for i in $(seq 1 $N); do
  echo function > $T/current_tracer
  sleep 0.5
  echo nop > $T/current_tracer
  echo "cycle $i ok"
done
stop_load
