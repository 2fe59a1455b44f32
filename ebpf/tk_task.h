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

#endif /* TK_TASK_H */
