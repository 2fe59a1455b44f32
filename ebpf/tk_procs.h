/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_procs.h - one row of the process table (struct tk_proc_row) from a
 * task, shared by both eBPF engines' task iterators: procs.c (BCC) and
 * core/procs.bpf.c (CO-RE).  The eBPF counterpart of the module's
 * /proc/toolkit/processes (lkm/procfs.c), the same columns read the same
 * way; see procs.c for what each column means and how it is read.
 *
 * Include after tk_mm.h and tk_task.h.  Kernel differences (the task
 * state's name and type before 5.14) are compile-time on BCC and CO-RE
 * field checks on the CO-RE engine, as in tk_task.h.
 */
#ifndef TK_PROCS_H
#define TK_PROCS_H

/* bound of the thread walk; 2 branches per step keeps the verifier's
 * pending-state count (8192 on 6.1) well clear */
#define TK_PROC_MAX_THREADS	1024


/*
 * task_state_to_char(): __task_state_index() (include/linux/sched.h, the
 * same on 6.1 and 6.12) then "RSDTtXZPI"[fls(index)]; fls() is x86 asm in
 * the kernel, so it is a small loop here, and the letter a switch (no
 * read-only data section for BCC to relocate).
 */
static __always_inline u32 tk_state_char(struct task_struct *t)
{
	unsigned int state = 0, report;
	int exit_state = 0;
	u32 idx = 0;
	int i;

#ifdef TK_CORE
	if (bpf_core_field_exists(t->__state)) {
		bpf_probe_read_kernel(&state, sizeof(state), &t->__state);
	} else {
		struct task_struct___pre514 *old = (void *)t;
		long prev = 0;

		bpf_probe_read_kernel(&prev, sizeof(prev), &old->state);
		state = prev;
	}
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(5, 14, 0)
	bpf_probe_read_kernel(&state, sizeof(state), &t->__state);
#else
	long old = 0;

	bpf_probe_read_kernel(&old, sizeof(old), &t->state);
	state = old;
#endif
	bpf_probe_read_kernel(&exit_state, sizeof(exit_state), &t->exit_state);
	report = (state | exit_state) & TASK_REPORT;
	if ((state & TASK_IDLE) == TASK_IDLE)
		report = TASK_REPORT_IDLE;
#if defined(TASK_FROZEN)
	if ((state & TASK_RTLOCK_WAIT) || (state & TASK_FROZEN))
		report = TASK_UNINTERRUPTIBLE;
#elif defined(TASK_RTLOCK_WAIT)
	if (state == TASK_RTLOCK_WAIT)
		report = TASK_UNINTERRUPTIBLE;
#endif
#pragma unroll
	for (i = 0; i < 8; i++)
		if (report & (1U << i))
			idx = i + 1;
	switch (idx) {
	case 0:
		return 'R';
	case 1:
		return 'S';
	case 2:
		return 'D';
	case 3:
		return 'T';
	case 4:
		return 't';
	case 5:
		return 'X';
	case 6:
		return 'Z';
	case 7:
		return 'P';
	default:
		return 'I';
	}
}

static __always_inline int tk_proc_fill(struct task_struct *task,
					struct tk_proc_row *out)
{
	struct task_struct *parent = NULL, *t;
	struct signal_struct *sig = NULL;
	struct mm_struct *mm = NULL;
	struct list_head *head, *node = NULL;
	struct tk_proc_row row;
	unsigned long hiwater = 0, total_vm = 0;
	u64 runtime;
	long rss;
	int nr_threads = 0;
	u32 pid = 0, tgid = 0;
	int i;

	if (!task)
		return 0;	/* the walk's end */
	bpf_probe_read_kernel(&pid, sizeof(pid), &task->pid);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &task->tgid);
	if (pid != tgid || tk_is_kthread(task))
		return 0;	/* threads are summed at their leader */
	bpf_probe_read_kernel(&sig, sizeof(sig), &task->signal);
	if (!sig)
		return 0;

	__builtin_memset(&row, 0, sizeof(row));
	bpf_probe_read_kernel(&row.cpu_ns, sizeof(row.cpu_ns),
			      &sig->sum_sched_runtime);
	/* for_each_thread(): signal->thread_head, linked by thread_node */
	head = &sig->thread_head;
	bpf_probe_read_kernel(&node, sizeof(node), &head->next);
	for (i = 0; i < TK_PROC_MAX_THREADS; i++) {
		if (!node || node == head)
			break;
		t = (struct task_struct *)((char *)node -
			TK_OFFSETOF(struct task_struct, thread_node));
		runtime = 0;
		bpf_probe_read_kernel(&runtime, sizeof(runtime),
				      &t->se.sum_exec_runtime);
		row.cpu_ns += runtime;
		if (!mm)
			bpf_probe_read_kernel(&mm, sizeof(mm), &t->mm);
		bpf_probe_read_kernel(&node, sizeof(node),
				      &t->thread_node.next);
	}
	if (node && node != head)
		row.flags |= TK_PROC_FLAG_CPU_PARTIAL;
	if (!mm)
		return 0;	/* leaving: no thread has an mm any more */

	rss = tk_mm_rss(mm);
	bpf_probe_read_kernel(&hiwater, sizeof(hiwater), &mm->hiwater_rss);
	if (hiwater < (unsigned long)rss)
		hiwater = rss;
	bpf_probe_read_kernel(&total_vm, sizeof(total_vm), &mm->total_vm);
	row.rss_kib = (u64)rss << (TK_PAGE_SHIFT - 10);
	row.hiwater_rss_kib = (u64)hiwater << (TK_PAGE_SHIFT - 10);
	row.total_vm_kib = (u64)total_vm << (TK_PAGE_SHIFT - 10);

	row.pid = tgid;
	bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
	if (parent)
		bpf_probe_read_kernel(&row.ppid, sizeof(row.ppid),
				      &parent->tgid);
	row.uid = tk_task_uid(task);
	bpf_probe_read_kernel(&nr_threads, sizeof(nr_threads),
			      &sig->nr_threads);
	row.threads = nr_threads;
	row.state = tk_state_char(task);
	bpf_probe_read_kernel(&row.start_ns, sizeof(row.start_ns),
			      &task->start_time);
	bpf_probe_read_kernel(row.comm, sizeof(row.comm), &task->comm[0]);
	*out = row;
	return 1;
}

#endif /* TK_PROCS_H */
