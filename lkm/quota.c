// SPDX-License-Identifier: GPL-2.0
/*
 * quota.c - per-process quotas on heap and open files, enforced by SIGKILL.
 *
 * A tracked process is named by (tgid, start time of its group leader), so
 * a process that later reuses the pid is never limited.  Two quantities:
 *
 *   heap   mm->data_vm in bytes: the private writable, non-stack memory
 *          that RLIMIT_DATA limits (brk extent plus private writable
 *          mappings).  The kernel keeps data_vm itself (vm_stat_account);
 *          it changes only through brk, mmap, munmap, mremap, mprotect
 *          and execve, so it is read when each of those syscalls returns
 *          (kretprobes whose entry handler skips untracked processes).
 *   files  open descriptors: the bits set in the fd table's open_fds.
 *          Every new descriptor is reserved there and then made visible by
 *          fd_install() (open, dup, F_DUPFD, pipe, socket, accept, eventfd,
 *          epoll_create, memfd_create, SCM_RIGHTS...), except dup2/dup3,
 *          which install through do_dup2(): so a kprobe on fd_install and
 *          kretprobes on the dup2/dup3 syscalls see every creation.  The
 *          count is recomputed from the bitmap each time, so descriptors
 *          open at registration and closes (close, close_range, exec's
 *          close-on-exec) are always accounted without hooking them.
 *
 * The hook that sees a value over its quota sends SIGKILL to current (the
 * thread group dies) and queues a kill record, once per process.  The
 * signal takes effect when the task returns toward user space, so the
 * crossing call itself completes.
 *
 * Entries live in an RCU hash table keyed by tgid: hooks only read it under
 * RCU (probe context: no sleeping, no lock but the ring's), writers (the
 * /proc file, do_exit) change it under tk_quota_lock with hash_del_rcu() and
 * kfree_rcu().  do_exit of the group leader removes its entry; an entry a
 * racing `set` inserted after that hook ran is pruned when the file is next
 * read or written (its task is gone or has exited).
 *
 * The hooked functions are include/toolkit_quota.h's TK_QUOTA_KPROBES, the
 * list the eBPF builds attach too.  The file /proc/toolkit/quota is
 * quota_proc.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/fdtable.h>
#include <linux/hashtable.h>
#include <linux/kprobes.h>
#include <linux/mm.h>
#include <linux/ptrace.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>

#include "quota.h"

DEFINE_HASHTABLE(tk_quota_table, TK_QUOTA_BITS);
DEFINE_SPINLOCK(tk_quota_lock);
atomic_t tk_quota_count = ATOMIC_INIT(0);

/* ---- the table ------------------------------------------------------ */

/* Under rcu_read_lock() or tk_quota_lock. */
struct tk_quota *tk_quota_find(pid_t tgid, u64 start_ns)
{
	struct tk_quota *q;

	hash_for_each_possible_rcu(tk_quota_table, q, node, tgid)
		if (q->tgid == tgid && q->start_ns == start_ns)
			return q;
	return NULL;
}

/* Under tk_quota_lock. */
void tk_quota_remove(struct tk_quota *q)
{
	hash_del_rcu(&q->node);
	atomic_dec(&tk_quota_count);
	kfree_rcu(q, rcu);
}

/* ---- the hooks ------------------------------------------------------ */

u64 tk_open_fds(struct files_struct *files)
{
	struct fdtable *fdt;
	u64 n;

	rcu_read_lock();
	fdt = files_fdtable(files);
	n = bitmap_weight(fdt->open_fds, fdt->max_fds);
	rcu_read_unlock();
	return n;
}

u64 tk_heap_bytes(struct mm_struct *mm)
{
	return (u64)READ_ONCE(mm->data_vm) << PAGE_SHIFT;
}

/* Is current a user-space task of a tracked process?  Probe context. */
static bool tk_quota_current_tracked(void)
{
	struct task_struct *tsk = current;
	bool found;

	if (!atomic_read(&tk_quota_count) || (tsk->flags & PF_KTHREAD))
		return false;
	rcu_read_lock();
	found = tk_quota_find(tsk->tgid, tsk->group_leader->start_time);
	rcu_read_unlock();
	return found;
}

/* Kill current's process for going over @kind, once; probe context. */
static void tk_quota_kill(struct tk_quota *q, u32 kind, u64 quota, u64 value)
{
	struct tk_record rec;

	if (cmpxchg(&q->killed, 0, kind) != 0)
		return;
	/* SIGKILL to one thread kills the whole thread group */
	send_sig(SIGKILL, current, 1);
	if (!tk_event_enabled(TK_EVENT_KILL))
		return;
	tk_fill_common(&rec, TK_EVENT_KILL, current);
	rec.quota_kind = kind;
	rec.quota = quota;
	rec.quota_value = value;
	tk_ring_submit(&rec);
}

/* Check current against its quota of @kind; probe context. */
static void tk_quota_check(u32 kind)
{
	struct task_struct *tsk = current;
	struct tk_quota *q;
	u64 quota, value;

	if (!atomic_read(&tk_quota_count) || (tsk->flags & PF_KTHREAD))
		return;
	rcu_read_lock();
	q = tk_quota_find(tsk->tgid, tsk->group_leader->start_time);
	if (!q || READ_ONCE(q->killed))
		goto unlock;
	if (kind == TK_QUOTA_HEAP) {
		quota = READ_ONCE(q->heap_quota);
		if (!quota || !tsk->mm)
			goto unlock;
		value = tk_heap_bytes(tsk->mm);
	} else {
		quota = READ_ONCE(q->files_quota);
		if (!quota || !tsk->files)
			goto unlock;
		value = tk_open_fds(tsk->files);
	}
	if (value > quota)
		tk_quota_kill(q, kind, quota, value);
unlock:
	rcu_read_unlock();
}

/* fd_install(fd, file): a reserved descriptor becomes visible. */
static int tk_fd_install_pre(struct kprobe *kp, struct pt_regs *regs)
{
	tk_quota_check(TK_QUOTA_FILES);
	return 0;
}

/* do_exit(code): the group leader's exit drops its entry. */
static int tk_quota_exit_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct task_struct *tsk = current;
	struct tk_quota *q;
	unsigned long flags;

	if (!atomic_read(&tk_quota_count) || !tk_is_process_exit(tsk))
		return 0;
	spin_lock_irqsave(&tk_quota_lock, flags);
	q = tk_quota_find(tsk->tgid, tsk->start_time);
	if (q)
		tk_quota_remove(q);
	spin_unlock_irqrestore(&tk_quota_lock, flags);
	return 0;
}

/* Entry of a hooked syscall: keep a return instance only when tracked. */
static int tk_quota_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return tk_quota_current_tracked() ? 0 : 1;
}

static int tk_quota_heap_ret(struct kretprobe_instance *ri,
			     struct pt_regs *regs)
{
	tk_quota_check(TK_QUOTA_HEAP);
	return 0;
}

static int tk_quota_files_ret(struct kretprobe_instance *ri,
			      struct pt_regs *regs)
{
	if ((long)regs_return_value(regs) >= 0)
		tk_quota_check(TK_QUOTA_FILES);
	return 0;
}

/* the pre-handler of each kind of TK_QUOTA_KPROBES' P() entries */
#define tk_quota_pre_FILES	tk_fd_install_pre
#define tk_quota_pre_EXIT	tk_quota_exit_pre
#define TK_QUOTA_KPROBE(kind, sym) \
	{ .symbol_name = #sym, .pre_handler = tk_quota_pre_##kind },
#define TK_QUOTA_NO_KRETPROBE(kind, sys)

static struct kprobe tk_quota_kprobes[] = {
	TK_QUOTA_KPROBES(TK_QUOTA_KPROBE, TK_QUOTA_NO_KRETPROBE)
};

/* the return handler of each kind of TK_QUOTA_KPROBES' R() entries */
#define tk_quota_ret_HEAP	tk_quota_heap_ret
#define tk_quota_ret_FILES	tk_quota_files_ret
#define TK_QUOTA_NO_KPROBE(kind, sym)
#define TK_QUOTA_KRETPROBE(kind, sys) \
	{ .kp.symbol_name = "__x64_sys_" #sys, .entry_handler = tk_quota_entry, \
	  .handler = tk_quota_ret_##kind },

/* x86-64 syscall entry points (compat 32-bit syscalls are not hooked) */
static struct kretprobe tk_quota_kretprobes[] = {
	TK_QUOTA_KPROBES(TK_QUOTA_NO_KPROBE, TK_QUOTA_KRETPROBE)
};

static struct kprobe *tk_quota_kp_ptrs[ARRAY_SIZE(tk_quota_kprobes)];
static struct kretprobe *tk_quota_rp_ptrs[ARRAY_SIZE(tk_quota_kretprobes)];

int tk_quota_register(void)
{
	int i, ret;

	/* fresh probes: an earlier load of this image may have used them */
	for (i = 0; i < ARRAY_SIZE(tk_quota_kprobes); i++) {
		struct kprobe *kp = &tk_quota_kprobes[i];

		*kp = (struct kprobe){ .symbol_name = kp->symbol_name,
				       .pre_handler = kp->pre_handler };
		tk_quota_kp_ptrs[i] = kp;
	}
	for (i = 0; i < ARRAY_SIZE(tk_quota_kretprobes); i++) {
		struct kretprobe *rp = &tk_quota_kretprobes[i];

		*rp = (struct kretprobe){ .kp.symbol_name = rp->kp.symbol_name,
					  .entry_handler = rp->entry_handler,
					  .handler = rp->handler };
		tk_quota_rp_ptrs[i] = rp;
	}
	ret = register_kretprobes(tk_quota_rp_ptrs,
				  ARRAY_SIZE(tk_quota_rp_ptrs));
	if (ret < 0) {
		pr_err("cannot register the quota kretprobes, error %d\n", ret);
		return ret;
	}
	ret = register_kprobes(tk_quota_kp_ptrs, ARRAY_SIZE(tk_quota_kp_ptrs));
	if (ret < 0) {
		pr_err("cannot register the quota kprobes, error %d\n", ret);
		goto unregister_kretprobes;
	}
	return 0;

unregister_kretprobes:
	unregister_kretprobes(tk_quota_rp_ptrs, ARRAY_SIZE(tk_quota_rp_ptrs));
	return ret;
}

/* Returns only when no handler runs any more. */
void tk_quota_unregister(void)
{
	unregister_kprobes(tk_quota_kp_ptrs, ARRAY_SIZE(tk_quota_kp_ptrs));
	unregister_kretprobes(tk_quota_rp_ptrs, ARRAY_SIZE(tk_quota_rp_ptrs));
}

/* Drop every quota: after the hooks and /proc/toolkit/quota are gone. */
void tk_quota_free(void)
{
	struct tk_quota *q;
	struct hlist_node *tmp;
	unsigned long flags;
	int bkt;

	spin_lock_irqsave(&tk_quota_lock, flags);
	hash_for_each_safe(tk_quota_table, bkt, tmp, q, node)
		tk_quota_remove(q);
	spin_unlock_irqrestore(&tk_quota_lock, flags);
	rcu_barrier();	/* the kfree_rcu() callbacks run before unload */
}

/* Missed hits of the quota probes (a kretprobe short of instances). */
unsigned long tk_quota_missed(void)
{
	unsigned long n = 0;
	int i;

	for (i = 0; i < ARRAY_SIZE(tk_quota_kprobes); i++)
		n += READ_ONCE(tk_quota_kprobes[i].nmissed);
	for (i = 0; i < ARRAY_SIZE(tk_quota_kretprobes); i++)
		n += READ_ONCE(tk_quota_kretprobes[i].nmissed) +
		     READ_ONCE(tk_quota_kretprobes[i].kp.nmissed);
	return n;
}
