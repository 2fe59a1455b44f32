// SPDX-License-Identifier: GPL-2.0
/*
 * probes.c - the kprobes that produce the lifecycle records.
 *
 * Model: samples/kprobes/kprobe_example.c.  Only pre-handlers are used.
 * Handlers run in probe context: they never sleep, never allocate, and
 * take no lock except the ring's spinlock.  Each handler's own run time is
 * measured with local_clock() and summed per CPU.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/binfmts.h>
#include <linux/cred.h>
#include <linux/kprobes.h>
#include <linux/mm.h>
#include <linux/percpu.h>
#include <linux/ptrace.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/clock.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/string.h>
#include <linux/timekeeping.h>
#include <linux/uidgid.h>

#include "toolkit_lkm.h"

struct tk_hook_time {
	u64 count;
	u64 total_ns;
};

struct tk_hook_times {
	struct tk_hook_time hook[TK_HOOK_MAX];
};

static DEFINE_PER_CPU(struct tk_hook_times, tk_hook_times);

/* Account the handler's run time; probe context, preemption disabled. */
static void tk_hook_account(enum tk_hook hook, u64 t0)
{
	u64 delta = local_clock() - t0;

	this_cpu_inc(tk_hook_times.hook[hook].count);
	this_cpu_add(tk_hook_times.hook[hook].total_ns, delta);
}

/* Fill the fields every record has, from @task (also used by quota.c). */
void tk_fill_common(struct tk_record *rec, u32 type,
			   struct task_struct *task)
{
	memset(rec, 0, sizeof(*rec));
	rec->ts_ns = ktime_get_ns();
	rec->start_ns = task->start_time;
	rec->type = type;
	rec->pid = task->pid;
	rec->tgid = task->tgid;
	rcu_read_lock();
	rec->ppid = rcu_dereference(task->real_parent)->tgid;
	rcu_read_unlock();
	rec->uid = from_kuid(&init_user_ns, task_uid(task));
	rec->cpu = smp_processor_id();
	/* an unlocked copy, as tracepoints take it; always NUL terminated */
	strscpy_pad(rec->comm, task->comm, sizeof(rec->comm));
}

/*
 * Resident pages of @mm as the exiting task @tsk (== current) sees them.
 * With SPLIT_RSS_COUNTING (6.1 and older) each thread caches up to 64
 * counter updates; do_exit() folds current's cache into the mm only after
 * our probe point, so add it here (reading current's own cache is safe).
 * From 6.2 (f1a7941243c1 "mm: convert mm's rss stats into percpu_counter")
 * there is no per-thread cache and get_mm_rss() reads the percpu_counters'
 * folded value, as /proc/PID/status does on that line.
 */
static unsigned long tk_exit_rss_pages(struct mm_struct *mm,
				       struct task_struct *tsk)
{
	long rss = get_mm_rss(mm);

#ifdef SPLIT_RSS_COUNTING
	rss += tsk->rss_stat.count[MM_FILEPAGES] +
	       tsk->rss_stat.count[MM_ANONPAGES] +
	       tsk->rss_stat.count[MM_SHMEMPAGES];
#endif
	return rss > 0 ? rss : 0;
}

/*
 * wake_up_new_task(p): kernel_clone() made @p runnable.  A new thread
 * group is a fork, a CLONE_THREAD child (pid != tgid) is a clone.
 */
static int tk_fork_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct task_struct *p;
	struct tk_record rec;
	u64 t0 = local_clock();
	u32 type;

	p = (struct task_struct *)regs_get_kernel_argument(regs, 0);
	if (p->flags & PF_KTHREAD)
		goto out;
	type = p->pid == p->tgid ? TK_EVENT_FORK : TK_EVENT_CLONE;
	if (!tk_event_enabled(type))
		goto out;
	tk_fill_common(&rec, type, p);
	tk_ring_submit(&rec);
out:
	tk_hook_account(TK_HOOK_FORK, t0);
	return 0;
}

/*
 * setup_new_exec(bprm): runs once per successful execve() that reached
 * the point of no return, after begin_new_exec() set the new comm, for
 * every binary format (ELF, #! scripts and binfmt_misc end in the ELF
 * loader, which calls it once).  current is the exec'ing task, already
 * the thread group leader (de_thread() is done).
 */
static int tk_exec_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct task_struct *tsk = current;
	struct tk_record rec;
	u64 t0 = local_clock();

	if ((tsk->flags & PF_KTHREAD) || !tk_event_enabled(TK_EVENT_EXEC))
		goto out;
	tk_fill_common(&rec, TK_EVENT_EXEC, tsk);
	tk_ring_submit(&rec);
out:
	tk_hook_account(TK_HOOK_EXEC, t0);
	return 0;
}

/*
 * do_exit(code): current is exiting, its mm still attached (exit_mm()
 * comes later), so RSS and peak RSS are real.  Only the thread group
 * leader of a user-space process is recorded; a leader killed by a
 * sibling's execve() (de_thread) is not an exit of the process.
 *
 * cpu_ns is read without locks: exact for the leader and the threads that
 * already exited (folded into signal->utime/stime), and approximate when
 * sibling threads are still running (their time is not included).
 */
static int tk_exit_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct task_struct *tsk = current;
	struct mm_struct *mm;
	struct tk_record rec;
	u64 t0 = local_clock();

	if (!tk_event_enabled(TK_EVENT_EXIT) || !tk_is_process_exit(tsk))
		goto out;

	tk_fill_common(&rec, TK_EVENT_EXIT, tsk);
	rec.exit_code = (s32)regs_get_kernel_argument(regs, 0);
	rec.cpu_ns = tsk->utime + tsk->stime +
		     tsk->signal->utime + tsk->signal->stime;
	mm = tsk->mm;	/* current's own mm: stable while it runs */
	if (mm) {
		unsigned long rss = tk_exit_rss_pages(mm, tsk);
		unsigned long hiwater = max(mm->hiwater_rss, rss);

		rec.rss_kib = (u64)rss << (PAGE_SHIFT - 10);
		rec.hiwater_rss_kib = (u64)hiwater << (PAGE_SHIFT - 10);
		rec.flags |= TK_FLAG_HAS_MM;
	}
	tk_ring_submit(&rec);
out:
	tk_hook_account(TK_HOOK_EXIT, t0);
	return 0;
}

/* the handlers, by hook; the symbols come from TK_HOOKS in the header */
static const kprobe_pre_handler_t tk_pre_handlers[TK_HOOK_MAX] = {
	[TK_HOOK_FORK] = tk_fork_pre,
	[TK_HOOK_EXEC] = tk_exec_pre,
	[TK_HOOK_EXIT] = tk_exit_pre,
};

static const char *const tk_hook_symbols[TK_HOOK_MAX] = {
#define TK_HOOK_SYMBOL(name, symbol, event)	[TK_HOOK_##name] = symbol,
	TK_HOOKS(TK_HOOK_SYMBOL)
#undef TK_HOOK_SYMBOL
};

static struct kprobe tk_kprobes[TK_HOOK_MAX];

static struct kprobe *tk_kprobe_ptrs[TK_HOOK_MAX] = {
	&tk_kprobes[TK_HOOK_FORK],
	&tk_kprobes[TK_HOOK_EXEC],
	&tk_kprobes[TK_HOOK_EXIT],
};

int tk_probes_register(void)
{
	int i, ret;

	/* fresh kprobes: an earlier load of this image may have used them */
	for (i = 0; i < TK_HOOK_MAX; i++) {
		memset(&tk_kprobes[i], 0, sizeof(tk_kprobes[i]));
		tk_kprobes[i].symbol_name = tk_hook_symbols[i];
		tk_kprobes[i].pre_handler = tk_pre_handlers[i];
	}
	ret = register_kprobes(tk_kprobe_ptrs, TK_HOOK_MAX);
	if (ret < 0)
		pr_err("cannot register the kprobes (%s, %s, %s), error %d\n",
		       tk_hook_symbols[TK_HOOK_FORK], tk_hook_symbols[TK_HOOK_EXEC],
		       tk_hook_symbols[TK_HOOK_EXIT], ret);
	return ret;
}

/* Returns only when no handler runs any more (it synchronizes RCU). */
void tk_probes_unregister(void)
{
	unregister_kprobes(tk_kprobe_ptrs, TK_HOOK_MAX);
}

void tk_probes_stats(struct tk_hook_stats out[TK_HOOK_MAX])
{
	int hook, cpu;

	for (hook = 0; hook < TK_HOOK_MAX; hook++) {
		out[hook].symbol = tk_kprobes[hook].symbol_name;
		out[hook].count = 0;
		out[hook].total_ns = 0;
		out[hook].missed = tk_kprobes[hook].nmissed;
		for_each_possible_cpu(cpu) {
			struct tk_hook_time *t;

			t = &per_cpu_ptr(&tk_hook_times, cpu)->hook[hook];

			out[hook].count += READ_ONCE(t->count);
			out[hook].total_ns += READ_ONCE(t->total_ns);
		}
	}
}

/* Racy against running handlers by design: an approximate zero point. */
void tk_probes_reset(void)
{
	int hook, cpu;

	for (hook = 0; hook < TK_HOOK_MAX; hook++) {
		tk_kprobes[hook].nmissed = 0;
		for_each_possible_cpu(cpu) {
			struct tk_hook_time *t;

			t = &per_cpu_ptr(&tk_hook_times, cpu)->hook[hook];

			WRITE_ONCE(t->count, 0);
			WRITE_ONCE(t->total_ns, 0);
		}
	}
}
