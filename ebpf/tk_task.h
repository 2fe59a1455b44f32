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
 * <linux/mm_types.h>, <linux/cred.h>, <linux/version.h> and "tk_mm.h" (the
 * RSS counters' reader for both kernel lines).
 */
#ifndef TK_TASK_H
#define TK_TASK_H

#ifdef TK_CORE
#define TK_PAGE_SHIFT	12	/* x86-64, the CO-RE build's only target */
/* a field's offset in the running kernel's layout, not the header's */
#define TK_OFFSETOF(type, field)	bpf_core_field_offset(type, field)
#else
#define TK_PAGE_SHIFT	PAGE_SHIFT
#define TK_OFFSETOF(type, field)	offsetof(type, field)
#endif

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

/*
 * RSS of mm in pages as get_mm_rss() counts it: file + anon + shmem, each
 * through tk_mm_counter() (tk_mm.h: the folded value on >= 6.2, as
 * get_mm_counter() and the module's processes file read it).  On
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

/*
 * Kernel differences, read the way each engine can: BCC compiles against
 * the running kernel's headers (version tests), the CO-RE object asks the
 * kernel's BTF at load time (bpf_core_field_exists() on the flavours of
 * core/tk_vmlinux.h).  Nothing else in the shared logic differs.
 */

/*
 * Pages of t's own RSS counter cache (SPLIT_RSS_COUNTING, <= 6.1: up to 64
 * updates per thread that do_exit() folds into the mm only after its entry),
 * file + anon + shmem; 0 on kernels without the cache.
 */
static __always_inline long tk_task_rss_cache(struct task_struct *t)
{
	int cached[4] = {};	/* NR_MM_COUNTERS: 4 on every kernel with it */

#ifdef TK_CORE
	struct task_struct___pre62 *old = (void *)t;

	if (!bpf_core_field_exists(old->rss_stat))
		return 0;
	bpf_probe_read_kernel(cached, sizeof(cached), &old->rss_stat.count[0]);
#elif defined(SPLIT_RSS_COUNTING)
	bpf_probe_read_kernel(cached, sizeof(cached), &t->rss_stat.count[0]);
#else
	return 0;
#endif
	return cached[MM_FILEPAGES] + cached[MM_ANONPAGES] +
	       cached[MM_SHMEMPAGES];
}

/*
 * signal->group_exec_task (5.16 and later: the thread whose execve() is
 * killing the others), or NULL.
 */
static __always_inline struct task_struct *
tk_group_exec_task(struct task_struct *t)
{
	struct task_struct *exec_task = NULL;
	struct signal_struct *sig = NULL;

	bpf_probe_read_kernel(&sig, sizeof(sig), &t->signal);
	if (!sig)
		return NULL;
#ifdef TK_CORE
	if (!bpf_core_field_exists(sig->group_exec_task))
		return NULL;
	bpf_probe_read_kernel(&exec_task, sizeof(exec_task),
			      &sig->group_exec_task);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(5, 16, 0)
	bpf_probe_read_kernel(&exec_task, sizeof(exec_task),
			      &sig->group_exec_task);
#endif
	return exec_task;
}

#endif /* TK_TASK_H */
