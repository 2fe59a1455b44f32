/* SPDX-License-Identifier: GPL-2.0 */
/*
 * toolkit_lkm.h - shared declarations of the toolkit process lifecycle module.
 *
 * The module is split by concern:
 *   main.c     module parameters, init/exit ordering
 *   probes.c   the kprobes (fork/clone, exec, exit) and their handler time
 *   ring.c     the bounded record ring, its counters and reader wake-up
 *   procfs.c   /proc/toolkit/{events,processes,meminfo,stats}
 *   control.c  /proc/toolkit/control: parse-all-then-apply commands
 *   quota.c    per-process heap and open-file quotas: table, hooks, kills
 *   quota_proc.c  /proc/toolkit/quota (quota.h is what the two share)
 *   vm.c       /proc/toolkit/vm: one process's memory layout and page table
 */
#ifndef TOOLKIT_LKM_H
#define TOOLKIT_LKM_H

#include <linux/types.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/irq_work.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

#include "toolkit_record.h"

#define TK_PROC_DIR		"toolkit"
#define TK_RING_MIN		16
#define TK_RING_MAX		1048576
#define TK_CONTROL_MAX		256
/* One bit per event type in the event mask; types are 1..TK_EVENT_MAX. */
#define TK_EVENT_BIT(type)	(1U << (type))
#define TK_EVENT_ALL		(((1U << (TK_EVENT_MAX + 1)) - 1) & ~1U)

/* module parameters (main.c) */
extern unsigned int tk_ring_size;
extern int tk_proc_gid;

/* event and counter names, indexed by type and by kind (ring.c) */
extern const char *const tk_event_names[TK_EVENT_MAX + 1];
extern const char *const tk_counter_names[TK_NKINDS];

/*
 * Counters of one event type, indexed by enum tk_counter_kind (the header's
 * TK_COUNTER_KINDS, shared with eBPF); see struct tk_ring.
 */
struct tk_event_counters {
	u64 n[TK_NKINDS];
};

/*
 * The ring.  Everything below @lock is protected by it, so a reader of the
 * counters always sees seen == filtered + delivered + dropped.
 */
struct tk_ring {
	spinlock_t lock;
	struct tk_record *buf;
	u32 size;		/* capacity in records */
	u64 head;		/* next record to write (monotonic) */
	u64 tail;		/* next record to read (monotonic) */
	struct tk_event_counters ev[TK_EVENT_MAX + 1];
	u64 cleared;		/* discarded by the `clear` command */
	u64 read_lost;		/* dequeued but never copied to user space */
	wait_queue_head_t wq;	/* readers and pollers of events */
	struct irq_work wake_work; /* wakes @wq from probe context */
	bool shutdown;		/* module exit: readers must not block */
};

extern struct tk_ring tk_ring;

/* Run-time settings changed by the control file. */
extern u64 tk_uid_filter;	/* TK_FILTER_OFF or TK_FILTER_ENCODE(uid) */
extern u64 tk_ppid_filter;	/* TK_FILTER_OFF or TK_FILTER_ENCODE(tgid) */
extern u32 tk_event_mask;	/* TK_EVENT_BIT()s of the enabled types */

/*
 * At do_exit() entry: is @tsk's exit the exit of its process?  Only the
 * thread group leader of a user-space process counts, and not a leader
 * killed by a sibling's execve() (de_thread()): that process lives on.
 */
static inline bool tk_is_process_exit(struct task_struct *tsk)
{
	struct task_struct *exec_task;

	if ((tsk->flags & PF_KTHREAD) || tsk->pid != tsk->tgid)
		return false;
	exec_task = READ_ONCE(tsk->signal->group_exec_task);
	return !exec_task || exec_task == tsk;
}

static inline bool tk_event_enabled(u32 type)
{
	return READ_ONCE(tk_event_mask) & TK_EVENT_BIT(type);
}

/* A consistent copy of the ring's counters, for the stats file. */
struct tk_ring_snap {
	struct tk_event_counters ev[TK_EVENT_MAX + 1];
	u64 cleared;
	u64 read_lost;
	u64 fill;
	u32 size;
};

int tk_ring_init(u32 size);
void tk_ring_snapshot(struct tk_ring_snap *snap);
void tk_ring_free(void);
void tk_ring_submit(const struct tk_record *rec);
unsigned int tk_ring_dequeue(struct tk_record *out, unsigned int max);
u64 tk_ring_fill(void);
void tk_ring_clear(void);
void tk_ring_reset_counters(void);
void tk_ring_add_read_lost(u64 n);
void tk_ring_shutdown(void);
void tk_ring_wait_pollers(void);

/* kprobes (probes.c), one per TK_HOOKS entry of the record header */
struct tk_hook_stats {
	const char *symbol;
	u64 count;
	u64 total_ns;
	unsigned long missed;
};

void tk_fill_common(struct tk_record *rec, u32 type, struct task_struct *task);
int tk_probes_register(void);
void tk_probes_unregister(void);
void tk_probes_stats(struct tk_hook_stats out[TK_HOOK_MAX]);
void tk_probes_reset(void);

/* /proc/toolkit (procfs.c, control.c) */
extern struct proc_dir_entry *tk_proc_dir;
int tk_procfs_create(void);
void tk_seq_filter(struct seq_file *m, const char *name, u64 filter);
void tk_procfs_remove(void);
extern const struct proc_ops tk_control_ops;
extern const struct proc_ops tk_vm_ops;	/* vm.c: /proc/toolkit/vm */

/* quotas (quota.c): hooks registered after, unregistered before probes.c's */
int tk_quota_register(void);
void tk_quota_unregister(void);
void tk_quota_free(void);
extern const struct proc_ops tk_quota_ops;

#endif /* TOOLKIT_LKM_H */
