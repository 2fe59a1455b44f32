/* SPDX-License-Identifier: GPL-2.0 */
/*
 * quota.c - per-process quotas on heap and open files from BCC eBPF: the
 * behaviour of lkm/quota.c (read it first) with BPF programs and maps.
 * Loaded by toolkit/backends/ebpf_quota.py; the quotas hold while that
 * process keeps the programs attached.
 *
 *   heap   mm->data_vm in bytes, read when brk, mmap, munmap, mremap,
 *          mprotect or execve(at) returns (kretprobes on the x86-64
 *          syscall entries)
 *   files  the bits set in the fd table's open_fds (up to TK_FD_WORDS *
 *          64 descriptors), counted at fd_install() and when dup2/dup3
 *          return
 *
 * Over a quota, bpf_send_signal(SIGKILL) signals current's thread group
 * (it takes effect on the return to user space) and a struct tk_record of
 * type TK_EVENT_KILL goes to tk_kills.  do_exit of the group leader deletes
 * its entry.
 *
 * tk_quotas is keyed by tgid; user space writes an entry with start_ns 0
 * for a process it holds unreaped (its own child: the pid cannot be reused
 * meanwhile) and the first hook that sees the process binds the entry to
 * its start time, so from then on a later process with the same pid never
 * matches.  The killed flag is set without an atomic compare-and-swap: two
 * threads crossing at the same instant may both record a kill.
 *
 * One file, like lifecycle.c: BCC rewrites map calls in the main file only.
 * Compiled with -I<repo>/include.
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/mm_types.h>
#include <linux/fdtable.h>

#include "toolkit_record.h"

#define TK_FD_WORDS	128	/* 8192 descriptors counted */
#define TK_SIGKILL	9

struct tk_quota {
	u64 start_ns;		/* 0: bind at the first hook */
	u64 heap_quota;		/* bytes; 0: none */
	u64 files_quota;	/* descriptors; 0: none */
	u32 killed;		/* TK_QUOTA_* that killed it */
	u32 pad;
};

BPF_HASH(tk_quotas, u32, struct tk_quota, 1024);
BPF_RINGBUF_OUTPUT(tk_kills, 8);
/*
 * [0] kills, [1] kill records dropped (ring full), [2] signals that could
 * not be sent (retried at the process's next hook)
 */
BPF_ARRAY(tk_quota_counts, u64, 3);

static __always_inline void tk_qcount(u32 key)
{
	u64 *val = tk_quota_counts.lookup(&key);

	if (val)
		__sync_fetch_and_add(val, 1);
}

/* current's entry, bound to its start time; NULL if not tracked */
static __always_inline struct tk_quota *tk_quota_current(struct task_struct *t)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *leader = NULL;
	struct tk_quota *q = tk_quotas.lookup(&tgid);
	u64 start = 0;

	if (!q)
		return NULL;
	bpf_probe_read_kernel(&leader, sizeof(leader), &t->group_leader);
	if (leader)
		bpf_probe_read_kernel(&start, sizeof(start),
				      &leader->start_time);
	if (!q->start_ns)
		q->start_ns = start;
	return q->start_ns == start ? q : NULL;
}

static __always_inline u64 tk_open_fds(struct task_struct *t)
{
	struct files_struct *files = NULL;
	struct fdtable *fdt = NULL;
	unsigned long *bits = NULL;
	unsigned int max = 0;
	u64 n = 0;
	int i;

	bpf_probe_read_kernel(&files, sizeof(files), &t->files);
	if (!files)
		return 0;
	bpf_probe_read_kernel(&fdt, sizeof(fdt), &files->fdt);
	if (!fdt)
		return 0;
	bpf_probe_read_kernel(&max, sizeof(max), &fdt->max_fds);
	bpf_probe_read_kernel(&bits, sizeof(bits), &fdt->open_fds);
#pragma unroll
	for (i = 0; i < TK_FD_WORDS; i++) {
		u64 w = 0;

		if (i * 64 >= max)
			break;
		bpf_probe_read_kernel(&w, sizeof(w), &bits[i]);
		n += __builtin_popcountll(w);
	}
	return n;
}

static __always_inline void tk_kill(void *ctx, struct task_struct *t,
				    struct tk_quota *q, u32 kind, u64 quota,
				    u64 value)
{
	struct tk_record *r;
	struct task_struct *parent = NULL;

	if (q->killed)
		return;
	q->killed = kind;
	/*
	 * With interrupts disabled the helper defers the signal to an
	 * irq_work, which runs before the return to user space; it fails
	 * (-EBUSY) if this CPU's irq_work is still pending: then the next
	 * hook of the process tries again.
	 */
	if (bpf_send_signal(TK_SIGKILL)) {
		q->killed = 0;
		tk_qcount(2);
		return;
	}
	tk_qcount(0);
	r = tk_kills.ringbuf_reserve(sizeof(*r));
	if (!r) {
		tk_qcount(1);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->type = TK_EVENT_KILL;
	r->cpu = bpf_get_smp_processor_id();
	r->pid = (u32)bpf_get_current_pid_tgid();
	r->tgid = bpf_get_current_pid_tgid() >> 32;
	r->uid = (u32)bpf_get_current_uid_gid();
	r->start_ns = q->start_ns;
	bpf_probe_read_kernel(&parent, sizeof(parent), &t->real_parent);
	if (parent)
		bpf_probe_read_kernel(&r->ppid, sizeof(r->ppid), &parent->tgid);
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->quota_kind = kind;
	r->quota = quota;
	r->quota_value = value;
	tk_kills.ringbuf_submit(r, 0);
}

static __always_inline int tk_check_files(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct tk_quota *q = tk_quota_current(t);
	u64 n;

	if (!q || q->killed || !q->files_quota)
		return 0;
	n = tk_open_fds(t);
	if (n > q->files_quota)
		tk_kill(ctx, t, q, TK_QUOTA_FILES, q->files_quota, n);
	return 0;
}

static __always_inline int tk_check_heap(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct tk_quota *q = tk_quota_current(t);
	struct mm_struct *mm = NULL;
	unsigned long pages = 0;
	u64 bytes;

	if (!q || q->killed || !q->heap_quota)
		return 0;
	bpf_probe_read_kernel(&mm, sizeof(mm), &t->mm);
	if (!mm)
		return 0;
	bpf_probe_read_kernel(&pages, sizeof(pages), &mm->data_vm);
	bytes = (u64)pages << PAGE_SHIFT;
	if (bytes > q->heap_quota)
		tk_kill(ctx, t, q, TK_QUOTA_HEAP, q->heap_quota, bytes);
	return 0;
}

int tk_fd_install(struct pt_regs *ctx)
{
	return tk_check_files(ctx);
}

int tk_files_ret(struct pt_regs *ctx)
{
	if ((long)PT_REGS_RC(ctx) < 0)
		return 0;
	return tk_check_files(ctx);
}

int tk_heap_ret(struct pt_regs *ctx)
{
	return tk_check_heap(ctx);
}

/* do_exit(): the group leader's exit deletes its entry */
int tk_quota_exit(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct signal_struct *sig = NULL;
	struct task_struct *exec_task = NULL;
	struct tk_quota *q;

	if ((u32)id != tgid)
		return 0;
	q = tk_quotas.lookup(&tgid);
	if (!q)
		return 0;
	bpf_probe_read_kernel(&sig, sizeof(sig), &t->signal);
	if (sig)
		bpf_probe_read_kernel(&exec_task, sizeof(exec_task),
				      &sig->group_exec_task);
	if (exec_task && exec_task != t)
		return 0;	/* de_thread(): the process lives on */
	if (tk_quota_current(t))
		tk_quotas.delete(&tgid);
	return 0;
}
