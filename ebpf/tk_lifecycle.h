/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_lifecycle.h - the lifecycle programs' logic, shared by both eBPF
 * engines: lifecycle.c (BCC, compiled at run time against the kernel's
 * headers) and core/lifecycle.bpf.c (CO-RE, compiled once by clang and
 * relocated by libbpf with the kernel's BTF).  Count, filter, fill and send
 * one struct tk_record (include/toolkit_record.h) per fork, clone, exec and
 * exit, exactly as the module (lkm/probes.c) does.
 *
 * The including file declares the maps and provides their accessors, the
 * only engine-specific part (BCC rewrites map method calls only in its main
 * source file, libbpf wants bpf_map_*() on map definitions):
 *   u64 *tk_counter_slot(u32 key)       tk_counters[key], this CPU's
 *   u64 *tk_config_slot(u32 slot)       tk_config[slot]
 *   u64 *tk_wakeup_slot(void)           this CPU's record count (wakeup)
 *   struct tk_record *tk_ring_reserve(void)
 *   void tk_ring_submit(struct tk_record *r, u64 flags)
 *   int tk_perf_submit(void *ctx, struct tk_record *r)  (perf transport)
 * and defines TK_TRANSPORT_RINGBUF or TK_TRANSPORT_PERF.  Kernel layout
 * differences are tk_task.h's and tk_mm.h's (compile-time on BCC, CO-RE
 * relocations on the CO-RE engine); include those first.
 */
#ifndef TK_LIFECYCLE_H
#define TK_LIFECYCLE_H

static __always_inline void tk_count(u32 type, u32 kind)
{
	u64 *val = tk_counter_slot(TK_COUNTER_KEY(type, kind));

	/*
	 * Atomic although per-CPU: fentry programs run with only migration
	 * disabled, so two of them can interleave on one CPU.
	 */
	if (val)
		__sync_fetch_and_add(val, 1);
}

static __always_inline u64 tk_cfg(u32 slot)
{
	u64 *val = tk_config_slot(slot);

	return val ? *val : 0;
}

/*
 * The ring buffer's submit flags under the TK_CONFIG_WAKEUP policy: 0 (the
 * kernel's default: wake the reader if it waits for this record), or
 * BPF_RB_NO_WAKEUP with a forced wakeup at every N-th record of this CPU;
 * the reader polls on a timer as well, so no record waits longer than its
 * poll interval.  A wakeup is an irq_work plus a reader context switch per
 * record: microseconds each under a storm, hence the batched policy.
 */
static __always_inline u64 tk_wakeup_flags(void)
{
	u64 every = tk_cfg(TK_CONFIG_WAKEUP);
	u64 *n;

	if (!every)
		return 0;
	n = tk_wakeup_slot();
	if (!n)
		return 0;
	*n += 1;	/* a lost update (nested programs) only moves a wakeup */
	if (*n >= every) {
		*n = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
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
 * signal->utime/stime.  No mm (a hook after exit_mm()): no RSS, and
 * TK_FLAG_HAS_MM stays clear.
 */
static __always_inline void tk_fill_exit(struct tk_record *r,
					 struct task_struct *t, long code)
{
	struct mm_struct *mm = NULL;
	struct signal_struct *sig = NULL;
	u64 utime = 0, stime = 0, sutime = 0, sstime = 0;
	unsigned long hiwater = 0;
	long rss;

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
	if (!mm)
		return;
	/*
	 * <= 6.1: each thread caches up to 64 counter updates and do_exit()
	 * folds current's cache into the mm only after this hook, so add it,
	 * as the module does (t == current); 0 where there is no cache.
	 */
	rss = tk_mm_rss(mm) + tk_task_rss_cache(t);
	if (rss < 0)
		rss = 0;
	bpf_probe_read_kernel(&hiwater, sizeof(hiwater), &mm->hiwater_rss);
	if (hiwater < (unsigned long)rss)
		hiwater = rss;
	r->rss_kib = (u64)rss << (TK_PAGE_SHIFT - 10);
	r->hiwater_rss_kib = (u64)hiwater << (TK_PAGE_SHIFT - 10);
	r->flags |= TK_FLAG_HAS_MM;
}

/* true if the uid and parent filters of tk_config let task t through */
static __always_inline int tk_passes(struct task_struct *t, u32 uid)
{
	u64 pfilter = tk_cfg(TK_CONFIG_PPID);
	struct task_struct *parent = NULL;
	u32 ppid = 0;

	if (!TK_FILTER_PASSES(tk_cfg(TK_CONFIG_UID), uid))
		return 0;
	if (pfilter == TK_FILTER_OFF)
		return 1;
	bpf_probe_read_kernel(&parent, sizeof(parent), &t->real_parent);
	if (parent)
		bpf_probe_read_kernel(&ppid, sizeof(ppid), &parent->tgid);
	return TK_FILTER_PASSES(pfilter, ppid);
}

/*
 * Count, filter, fill and send one record about task t.  is_exit adds the
 * exit fields (code is do_exit()'s argument).  Every call ends in exactly
 * one of filtered / delivered / dropped, so seen == the sum of the three.
 */
static __always_inline int tk_emit(void *ctx, u32 type, struct task_struct *t,
				   int is_exit, long code)
{
	u32 uid = tk_task_uid(t);

	tk_count(type, TK_SEEN);
	if (!tk_passes(t, uid)) {
		tk_count(type, TK_FILTERED);
		return 0;
	}
#if defined(TK_TRANSPORT_RINGBUF)
	struct tk_record *r = tk_ring_reserve();

	if (!r) {
		tk_count(type, TK_DROPPED);
		return 0;
	}
	tk_fill(r, type, t, uid);
	if (is_exit)
		tk_fill_exit(r, t, code);
	tk_ring_submit(r, tk_wakeup_flags());
	tk_count(type, TK_DELIVERED);
#elif defined(TK_TRANSPORT_PERF)
	struct tk_record rec;

	tk_fill(&rec, type, t, uid);
	if (is_exit)
		tk_fill_exit(&rec, t, code);
	/* fails (-ENOSPC) when this CPU's perf buffer is full; user space
	 * sees the same loss again as a PERF_RECORD_LOST (lost_cb) */
	if (tk_perf_submit(ctx, &rec) < 0)
		tk_count(type, TK_DROPPED);
	else
		tk_count(type, TK_DELIVERED);
#else
#error "define TK_TRANSPORT_RINGBUF or TK_TRANSPORT_PERF"
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

/* current is exiting with wait status code: leaders only. */
static __always_inline int tk_on_exit(void *ctx, long code)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct task_struct *exec_task;
	u32 pid = 0, tgid = 0;

	if (tk_is_kthread(t))
		return 0;
	bpf_probe_read_kernel(&pid, sizeof(pid), &t->pid);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &t->tgid);
	if (pid != tgid)
		return 0;
	/* a leader killed by a sibling's execve() (de_thread) is not an exit
	 * of the process: the module skips it too */
	exec_task = tk_group_exec_task(t);
	if (exec_task && exec_task != t)
		return 0;
	return tk_emit(ctx, TK_EVENT_EXIT, t, 1, code);
}

#endif /* TK_LIFECYCLE_H */
