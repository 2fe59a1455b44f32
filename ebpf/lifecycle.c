/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lifecycle.c - process lifecycle records (fork / clone / exec / exit with
 * RSS) from BCC eBPF programs.  One compile holds the programs of every probe
 * variant; user space (toolkit/backends/ebpf.py) loads and attaches only
 * those of the variant asked for:
 *
 *  kprobe      (default) the kernel functions the module (lkm/) probes:
 *              wake_up_new_task, setup_new_exec, do_exit.  Same hooks as the
 *              module, so the two backends measure the same thing and differ
 *              only in how the handler runs; kprobes also work on any kernel
 *              with CONFIG_KPROBES, BTF or not.
 *  tracepoint  sched:sched_process_fork and sched:sched_process_exec, attached
 *              as raw tracepoints: the classic tracepoint format carries only
 *              pids and comm, the record needs the child's task_struct
 *              (start_time, real_parent, cred), which the raw arguments give.
 *              Exit uses the do_exit kprobe: sched:sched_process_exit fires
 *              after exit_mm() on Debian's 6.1 (RSS would read 0) and no
 *              tracepoint sits in do_exit() before exit_mm().
 *  fentry      BPF trampolines on the same three functions (needs BTF;
 *              compiled only with -DTK_WITH_FENTRY, set when
 *              BPF.support_kfunc() says the kernel can).
 */
/*
 * Everything is in this one file on purpose: BCC rewrites map method calls
 * (tk_events.ringbuf_reserve(), tk_counters.lookup(), ...) only in the main
 * source file, not in included headers.
 *
 * Compiled with (see toolkit/backends/ebpf.py):
 *   -I<repo>/include -I<repo>/ebpf (tk_task.h: task and mm readers shared
 *   with procs.c)
 *   -DTK_TRANSPORT_RINGBUF=1 -DTK_RINGBUF_PAGES=<power of two>, or
 *   -DTK_TRANSPORT_PERF=1 (perf pages are chosen by user space at open time)
 *   -DTK_WITH_FENTRY=1 when the kernel supports BPF trampolines
 *
 * struct tk_record comes from include/toolkit_record.h, the header the
 * kernel module uses too, so both backends fill the same fields the same
 * way.  All kernel memory is read with bpf_probe_read_kernel(), so the same
 * helpers serve kprobe, raw tracepoint and fentry programs and BCC's
 * rewriter has nothing to guess.
 */
#include <uapi/linux/ptrace.h>
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/mm_types.h>
#include <linux/cred.h>
#include <linux/binfmts.h>

#include "toolkit_record.h"
#include "tk_mm.h"	/* tk_mm_counter(), shared with vm.c */
#include "tk_task.h"	/* uid, kthread, tk_mm_rss(): shared with procs.c */

/*
 * The counters of TK_COUNTER_KINDS (the header's, shared with the module),
 * one per (event type, kind) at TK_COUNTER_KEY(type, kind).  Per-CPU so the
 * hot path never bounces a cache line between CPUs.
 */
BPF_PERCPU_ARRAY(tk_counters, u64, TK_NCOUNTERS);

/*
 * The filters, at the header's TK_CONFIG_SLOTS: TK_CONFIG_UID (real uid)
 * and TK_CONFIG_PPID (parent's tgid, as the module's "ppid N"), each
 * TK_FILTER_OFF or TK_FILTER_ENCODE(id).  Written by user space.
 */
BPF_ARRAY(tk_config, u64, TK_CONFIG_MAX);

#if defined(TK_TRANSPORT_RINGBUF)
BPF_RINGBUF_OUTPUT(tk_events, TK_RINGBUF_PAGES);
#elif defined(TK_TRANSPORT_PERF)
BPF_PERF_OUTPUT(tk_events);
#else
#error "define TK_TRANSPORT_RINGBUF or TK_TRANSPORT_PERF"
#endif

static __always_inline void tk_count(u32 type, u32 kind)
{
	u32 key = TK_COUNTER_KEY(type, kind);
	u64 *val = tk_counters.lookup(&key);

	/*
	 * Atomic although per-CPU: fentry programs run with only migration
	 * disabled, so two of them can interleave on one CPU.
	 */
	if (val)
		__sync_fetch_and_add(val, 1);
}

/* The fields every record carries, read from task t. */
static __always_inline void tk_fill(struct tk_record *r, u32 type,
				    struct task_struct *t, u32 uid)
{
	struct task_struct *parent = NULL;

	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();		/* CLOCK_MONOTONIC */
	r->type = type;
	r->uid = uid;
	r->cpu = bpf_get_smp_processor_id();
	bpf_probe_read_kernel(&r->start_ns, sizeof(r->start_ns), &t->start_time);
	bpf_probe_read_kernel(&r->pid, sizeof(r->pid), &t->pid);
	bpf_probe_read_kernel(&r->tgid, sizeof(r->tgid), &t->tgid);
	bpf_probe_read_kernel(&parent, sizeof(parent), &t->real_parent);
	if (parent)
		bpf_probe_read_kernel(&r->ppid, sizeof(r->ppid), &parent->tgid);
	bpf_probe_read_kernel(r->comm, sizeof(r->comm), &t->comm[0]);
}

/*
 * Exit-only fields: RSS and peak RSS from the still attached mm (as
 * get_mm_rss() / get_mm_hiwater_rss()), and the CPU time of the thread
 * group: this task's utime+stime plus what its dead threads left in
 * signal->utime/stime.
 */
static __always_inline void tk_fill_exit(struct tk_record *r,
					 struct task_struct *t, long code)
{
	struct mm_struct *mm = NULL;
	struct signal_struct *sig = NULL;
	u64 utime = 0, stime = 0, sutime = 0, sstime = 0;

	r->exit_code = code;
	bpf_probe_read_kernel(&utime, sizeof(utime), &t->utime);
	bpf_probe_read_kernel(&stime, sizeof(stime), &t->stime);
	bpf_probe_read_kernel(&sig, sizeof(sig), &t->signal);
	if (sig) {
		bpf_probe_read_kernel(&sutime, sizeof(sutime), &sig->utime);
		bpf_probe_read_kernel(&sstime, sizeof(sstime), &sig->stime);
	}
	r->cpu_ns = utime + stime + sutime + sstime;

	bpf_probe_read_kernel(&mm, sizeof(mm), &t->mm);
	if (mm) {
		unsigned long hiwater = 0;
		long rss = tk_mm_rss(mm);
#ifdef SPLIT_RSS_COUNTING
		/*
		 * <= 6.1: each thread caches up to 64 counter updates and
		 * do_exit() folds current's cache into the mm only after this
		 * hook, so add it, as the module does (t == current).
		 */
		int cached[NR_MM_COUNTERS] = {};

		bpf_probe_read_kernel(cached, sizeof(cached), &t->rss_stat.count[0]);
		rss += cached[MM_FILEPAGES] + cached[MM_ANONPAGES] +
		       cached[MM_SHMEMPAGES];
#endif
		if (rss < 0)
			rss = 0;

		bpf_probe_read_kernel(&hiwater, sizeof(hiwater), &mm->hiwater_rss);
		if (hiwater < (unsigned long)rss)
			hiwater = rss;
		r->rss_kib = (u64)rss << (PAGE_SHIFT - 10);
		r->hiwater_rss_kib = (u64)hiwater << (PAGE_SHIFT - 10);
		r->flags |= TK_FLAG_HAS_MM;
	}
}

/*
 * Count, filter, fill and send one record about task t.  is_exit adds the
 * exit fields (code is do_exit()'s argument).  Every call ends in exactly
 * one of filtered / delivered / dropped, so seen == the sum of the three.
 */
static __always_inline int tk_emit(void *ctx, u32 type, struct task_struct *t,
				   int is_exit, long code)
{
	u32 uid_slot = TK_CONFIG_UID, ppid_slot = TK_CONFIG_PPID;
	u64 *filter = tk_config.lookup(&uid_slot);
	u64 *pfilter = tk_config.lookup(&ppid_slot);
	u32 uid = tk_task_uid(t);

	tk_count(type, TK_SEEN);
	if (filter && !TK_FILTER_PASSES(*filter, uid)) {
		tk_count(type, TK_FILTERED);
		return 0;
	}
	if (pfilter && *pfilter != TK_FILTER_OFF) {
		struct task_struct *parent = NULL;
		u32 ppid = 0;

		bpf_probe_read_kernel(&parent, sizeof(parent), &t->real_parent);
		if (parent)
			bpf_probe_read_kernel(&ppid, sizeof(ppid), &parent->tgid);
		if (!TK_FILTER_PASSES(*pfilter, ppid)) {
			tk_count(type, TK_FILTERED);
			return 0;
		}
	}
#if defined(TK_TRANSPORT_RINGBUF)
	struct tk_record *r = tk_events.ringbuf_reserve(sizeof(struct tk_record));

	if (!r) {
		tk_count(type, TK_DROPPED);
		return 0;
	}
	tk_fill(r, type, t, uid);
	if (is_exit)
		tk_fill_exit(r, t, code);
	tk_events.ringbuf_submit(r, 0);
	tk_count(type, TK_DELIVERED);
#else
	struct tk_record rec;

	tk_fill(&rec, type, t, uid);
	if (is_exit)
		tk_fill_exit(&rec, t, code);
	/* fails (-ENOSPC) when this CPU's perf buffer is full; user space
	 * sees the same loss again as a PERF_RECORD_LOST (lost_cb) */
	if (tk_events.perf_submit(ctx, &rec, sizeof(rec)) < 0)
		tk_count(type, TK_DROPPED);
	else
		tk_count(type, TK_DELIVERED);
#endif
	return 0;
}

/* p became runnable for the first time: a new process or a new thread. */
static __always_inline int tk_on_fork(void *ctx, struct task_struct *p)
{
	u32 pid = 0, tgid = 0;

	if (tk_is_kthread(p))
		return 0;
	bpf_probe_read_kernel(&pid, sizeof(pid), &p->pid);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &p->tgid);
	return tk_emit(ctx, pid != tgid ? TK_EVENT_CLONE : TK_EVENT_FORK,
		       p, 0, 0);
}

/* current has passed the point of no return of execve(); comm is new. */
static __always_inline int tk_on_exec(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	if (tk_is_kthread(t))
		return 0;
	return tk_emit(ctx, TK_EVENT_EXEC, t, 0, 0);
}

/* current enters do_exit(code), mm still attached: leaders only. */
static __always_inline int tk_on_exit(void *ctx, long code)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u32 pid = 0, tgid = 0;

	if (tk_is_kthread(t))
		return 0;
	bpf_probe_read_kernel(&pid, sizeof(pid), &t->pid);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &t->tgid);
	if (pid != tgid)
		return 0;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
	/* a leader killed by a sibling's execve() (de_thread) is not an
	 * exit of the process: the module skips it too */
	{
		struct signal_struct *sig = NULL;
		struct task_struct *exec_task = NULL;

		bpf_probe_read_kernel(&sig, sizeof(sig), &t->signal);
		if (sig)
			bpf_probe_read_kernel(&exec_task, sizeof(exec_task),
					      &sig->group_exec_task);
		if (exec_task && exec_task != t)
			return 0;
	}
#endif
	return tk_emit(ctx, TK_EVENT_EXIT, t, 1, code);
}

/* ---- kprobe variant (do_exit is also the tracepoint variant's exit) ---- */

/* runs when a new task is made runnable for the first time */
int kp_wake_up_new_task(struct pt_regs *ctx, struct task_struct *p)
{
	return tk_on_fork(ctx, p);
}

/* runs in the binfmt loader after begin_new_exec() set the new comm */
int kp_setup_new_exec(struct pt_regs *ctx, struct linux_binprm *bprm)
{
	return tk_on_exec(ctx);
}

/* runs at do_exit() entry: the mm is still attached */
int kp_do_exit(struct pt_regs *ctx, long code)
{
	return tk_on_exit(ctx, code);
}

/* ---- tracepoint variant (raw tracepoints) ---- */

/* sched_process_fork(struct task_struct *parent, struct task_struct *child),
 * in kernel_clone() just before wake_up_new_task(child) */
int tp_sched_process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	return tk_on_fork(ctx, (struct task_struct *)ctx->args[1]);
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid,
 * struct linux_binprm *bprm), p == current, after a successful load */
int tp_sched_process_exec(struct bpf_raw_tracepoint_args *ctx)
{
	return tk_on_exec(ctx);
}

/* ---- fentry variant ---- */
#ifdef TK_WITH_FENTRY
KFUNC_PROBE(wake_up_new_task, struct task_struct *p)
{
	return tk_on_fork(ctx, p);
}

KFUNC_PROBE(setup_new_exec, struct linux_binprm *bprm)
{
	return tk_on_exec(ctx);
}

KFUNC_PROBE(do_exit, long code)
{
	return tk_on_exit(ctx, code);
}
#endif
