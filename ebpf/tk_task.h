/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_task.h - reading a task and its mm from BPF, shared by the BCC
 * programs (lifecycle.c: records; procs.c: the process table), so both read
 * uid, kernel-thread flag and RSS the one way the module does.
 *
 * Only plain helpers live here: BCC rewrites map method calls only in the
 * main source file, and these use none.  All kernel memory is read with
 * bpf_probe_read_kernel(), so they serve kprobe, raw tracepoint, fentry and
 * iterator programs alike.  Include after <linux/sched.h>,
 * <linux/mm_types.h>, <linux/cred.h> and <linux/version.h>.
 */
#ifndef TK_TASK_H
#define TK_TASK_H

/* real uid (cred->uid) of t's objective credentials, init user ns */
static __always_inline u32 tk_task_uid(struct task_struct *t)
{
	const struct cred *cred = NULL;
	u32 uid = 0;

	bpf_probe_read_kernel(&cred, sizeof(cred), &t->real_cred);
	if (cred)
		bpf_probe_read_kernel(&uid, sizeof(uid), &cred->uid.val);
	return uid;
}

/* true if task t is a kernel thread (never reported) */
static __always_inline int tk_is_kthread(struct task_struct *t)
{
	unsigned int flags = 0;

	bpf_probe_read_kernel(&flags, sizeof(flags), &t->flags);
	return flags & PF_KTHREAD;
}

/* One mm RSS counter in pages, clamped at 0 like get_mm_counter(). */
static __always_inline long tk_mm_counter(struct mm_struct *mm, int member)
{
	long val = 0;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	/*
	 * >= 6.2 (f1a7941243c1 "mm: convert mm's rss stats into
	 * percpu_counter"): rss_stat[] is a struct percpu_counter.  Its
	 * 'count' is the folded global value; up to batch * nr_cpus pages
	 * may still sit in the per-CPU deltas, so this is an approximation
	 * (the module uses get_mm_counter(), which reads the same field).
	 */
	s64 count = 0;

	bpf_probe_read_kernel(&count, sizeof(count), &mm->rss_stat[member].count);
	val = count;
#else
	/* <= 6.1: rss_stat.count[] is an atomic_long_t per counter. */
	bpf_probe_read_kernel(&val, sizeof(val),
			      &mm->rss_stat.count[member].counter);
#endif
	return val < 0 ? 0 : val;
}

/*
 * RSS of mm in pages as get_mm_rss() counts it: file + anon + shmem.  On
 * <= 6.1 this leaves out the per-thread caches (SPLIT_RSS_COUNTING), as
 * get_mm_rss() and /proc/PID/status do; the exit record adds the exiting
 * thread's own cache itself (lifecycle.c).
 */
static __always_inline long tk_mm_rss(struct mm_struct *mm)
{
	return tk_mm_counter(mm, MM_FILEPAGES) +
	       tk_mm_counter(mm, MM_ANONPAGES) +
	       tk_mm_counter(mm, MM_SHMEMPAGES);
}

#endif /* TK_TASK_H */
