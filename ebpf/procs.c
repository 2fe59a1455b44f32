/* SPDX-License-Identifier: GPL-2.0 */
/*
 * procs.c - the process table from a BPF task iterator (kernel >= 5.8): the
 * eBPF counterpart of the module's /proc/toolkit/processes (lkm/procfs.c),
 * with the same columns read the same way.
 *
 * The kernel walks its task list (every thread, in pid order, each pinned
 * while the program runs, under rcu_read_lock()) and calls bpf_iter__task
 * once per task; for each thread group leader of a user-space process (not
 * PF_KTHREAD) with an mm, the program writes one struct tk_proc_row
 * (include/toolkit_record.h) with bpf_seq_write().  User space
 * (toolkit/backends/bpf_iter.py, toolkit/backends/ebpf.py) reads the
 * binary rows and decodes them with toolkit/schema.py.
 *
 * As the module:
 *  - the mm is that of the first thread that still has one (a zombie leader
 *    has none while its other threads run); no thread with one: no row;
 *  - cpu_ns = signal->sum_sched_runtime (dead threads) + every live
 *    thread's se.sum_exec_runtime (the module's tk_proc_cpu_ns(), what
 *    thread_group_cputime() totals); the thread list is walked with a
 *    bounded loop (TK_PROC_MAX_THREADS: the verifier needs a bound), and a
 *    process with more threads gets TK_PROC_FLAG_CPU_PARTIAL;
 *  - rss = get_mm_rss(), peak = get_mm_hiwater_rss() = max(hiwater_rss,
 *    rss), through tk_task.h's tk_mm_rss() on tk_mm.h's counter reader
 *    (shared with lifecycle.c and vm.c; 6.1 and >= 6.2 differ there);
 *  - state = task_state_to_char() of the leader, uid = real uid, ppid =
 *    real parent's tgid, threads = signal->nr_threads, comm = leader's.
 * The module pins a task with task_lock() to read t->mm; here the read is a
 * bpf_probe_read_kernel() under the iterator's RCU read lock: a process
 * exiting at that moment may show a stale mm's counters, never a fault.
 *
 * Compiled with -I<repo>/include -I<repo>/ebpf.
 */
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/mm_types.h>
#include <linux/cred.h>

#include "toolkit_record.h"
#include "tk_mm.h"
#include "tk_task.h"
#include "tk_iter.h"
#include "tk_procs.h"	/* the row, shared with core/procs.bpf.c */

BPF_ITER(task)
{
	struct tk_proc_row row;

	if (tk_proc_fill(ctx->task, &row))
		bpf_seq_write(ctx->meta->seq, &row, sizeof(row));
	return 0;
}
