// SPDX-License-Identifier: GPL-2.0
/*
 * procfs.c - /proc/toolkit/{events,processes,meminfo,stats}.
 *
 * Everything is a seq_file.  Files listing processes bypass hidepid, so
 * the directory is root-only unless proc_gid names a group that may read.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uidgid.h>
#include <linux/vmstat.h>

#include "toolkit_lkm.h"

#define TK_ESCAPE	" \t\n\\"
#define TK_PAGES_TO_KIB(pages)	((u64)(pages) << (PAGE_SHIFT - 10))

struct proc_dir_entry *tk_proc_dir;

/* ---- events --------------------------------------------------------- */

/*
 * Records are moved from the ring into a per-open batch and shown from
 * there: seq_file may call start()/show() again for the same position
 * (after a buffer overflow, or when the user buffer was too small), so a
 * record must stay available until it has been shown.  The seq position
 * counts records over the life of the file: batch[0] is at @base.
 * start() refills only once every record of the batch has been shown;
 * seq_file calls start() only after its buffer was copied out, so what is
 * discarded by a refill has reached user space.
 */
#define TK_EVENTS_BATCH	128

struct tk_events_file {
	loff_t base;
	unsigned int nr;
	struct tk_record batch[TK_EVENTS_BATCH];
};

/* The line format, generated from the header's field list. */
#define TK_FMT_SCALAR(type, name, doc)		TK_FMT_##type " "
#define TK_ARG_SCALAR(type, name, doc)		, r->name
#define TK_NO_ARRAY(type, name, count, doc)

static void *tk_events_start(struct seq_file *m, loff_t *pos)
{
	struct tk_events_file *f = m->private;

	if (*pos < f->base)
		return NULL;	/* no seeking back: the file is not seekable */
	if (*pos >= f->base + f->nr) {
		f->base = *pos;
		f->nr = tk_ring_dequeue(f->batch, TK_EVENTS_BATCH);
		if (!f->nr)
			return NULL;
	}
	return &f->batch[*pos - f->base];
}

static void *tk_events_next(struct seq_file *m, void *v, loff_t *pos)
{
	struct tk_events_file *f = m->private;

	++*pos;
	if (*pos < f->base + f->nr)
		return &f->batch[*pos - f->base];
	return NULL;
}

static void tk_events_stop(struct seq_file *m, void *v)
{
}

static int tk_events_show(struct seq_file *m, void *v)
{
	const struct tk_record *r = v;

	seq_printf(m, TK_RECORD_FIELDS(TK_FMT_SCALAR, TK_NO_ARRAY)
		   TK_RECORD_FIELDS(TK_ARG_SCALAR, TK_NO_ARRAY));
	seq_escape(m, r->comm, TK_ESCAPE);
	seq_putc(m, '\n');
	return 0;
}

static const struct seq_operations tk_events_seq_ops = {
	.start = tk_events_start,
	.next = tk_events_next,
	.stop = tk_events_stop,
	.show = tk_events_show,
};

static int tk_events_open(struct inode *inode, struct file *file)
{
	struct tk_events_file *f;
	int ret;

	f = kvzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	ret = seq_open(file, &tk_events_seq_ops);
	if (ret) {
		kvfree(f);
		return ret;
	}
	((struct seq_file *)file->private_data)->private = f;
	/* no lseek, no pread: the position is the record count */
	return nonseekable_open(inode, file);
}

/*
 * A read returns what is queued; when nothing is, it blocks until a
 * record arrives, or with O_NONBLOCK fails with -EAGAIN.  It returns 0
 * (end of file) only when the module is being unloaded.
 */
static ssize_t tk_events_read(struct file *file, char __user *buf,
			      size_t size, loff_t *ppos)
{
	ssize_t ret;

	if (!size)
		return 0;
	for (;;) {
		ret = seq_read(file, buf, size, ppos);
		if (ret)
			return ret;
		if (READ_ONCE(tk_ring.shutdown))
			return 0;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(tk_ring.wq,
					       tk_ring_fill() ||
					       READ_ONCE(tk_ring.shutdown));
		if (ret)
			return ret;
	}
}

static __poll_t tk_events_poll(struct file *file, poll_table *wait)
{
	struct seq_file *m = file->private_data;
	struct tk_events_file *f = m->private;
	__poll_t mask = 0;

	poll_wait(file, &tk_ring.wq, wait);
	/* unlocked reads of m: a stale answer only causes a retry */
	if (tk_ring_fill() || READ_ONCE(m->count) ||
	    READ_ONCE(m->index) < f->base + f->nr)
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(tk_ring.shutdown))
		mask |= EPOLLHUP;
	return mask;
}

/* Records taken from the ring but never copied to user space: read_lost. */
static int tk_events_release(struct inode *inode, struct file *file)
{
	struct seq_file *m = file->private_data;
	struct tk_events_file *f = m->private;
	u64 lost = 0;
	size_t i;

	if (m->index < f->base + f->nr)
		lost += f->base + f->nr - max(m->index, f->base);
	for (i = 0; m->buf && i < m->count; i++)
		if (m->buf[m->from + i] == '\n')
			lost++;
	tk_ring_add_read_lost(lost);
	kvfree(f);
	return seq_release(inode, file);
}

static const struct proc_ops tk_events_ops = {
	.proc_open = tk_events_open,
	.proc_read = tk_events_read,
	.proc_poll = tk_events_poll,
	.proc_release = tk_events_release,
};

/* ---- processes ------------------------------------------------------ */

/*
 * The process list is snapshotted at open(): every user-space thread
 * group leader is pinned with get_task_struct() under RCU into a kvmalloc
 * array, so the listing is complete and consistent however many reads it
 * takes (10,000+ processes), with no lock held between reads.  The array
 * is sized from a count taken first; if processes appeared in between and
 * it is too small, the snapshot is retried.  A process that exited after
 * the snapshot is left out when shown (no mm any more).
 */
struct tk_procs_file {
	unsigned int nr;
	struct task_struct *tasks[];
};

static void tk_procs_free(struct tk_procs_file *f)
{
	unsigned int i;

	for (i = 0; i < f->nr; i++)
		put_task_struct(f->tasks[i]);
	kvfree(f);
}

static struct tk_procs_file *tk_procs_snapshot(void)
{
	struct tk_procs_file *f;
	struct task_struct *p;
	unsigned int n, cap;
	bool full;

	for (;;) {
		n = 0;
		rcu_read_lock();
		for_each_process(p)
			n++;
		rcu_read_unlock();

		cap = n + n / 8 + 64;
		f = kvmalloc(struct_size(f, tasks, cap), GFP_KERNEL);
		if (!f)
			return NULL;
		f->nr = 0;
		full = false;
		rcu_read_lock();
		for_each_process(p) {
			if (p->flags & PF_KTHREAD)
				continue;
			if (f->nr == cap) {
				full = true;
				break;
			}
			get_task_struct(p);
			f->tasks[f->nr++] = p;
		}
		rcu_read_unlock();
		if (!full)
			return f;
		tk_procs_free(f);
	}
}

static void *tk_procs_start(struct seq_file *m, loff_t *pos)
{
	struct tk_procs_file *f = m->private;

	if (*pos == 0)
		return SEQ_START_TOKEN;
	if (*pos <= f->nr)
		return &f->tasks[*pos - 1];
	return NULL;
}

static void *tk_procs_next(struct seq_file *m, void *v, loff_t *pos)
{
	++*pos;
	return tk_procs_start(m, pos);
}

static void tk_procs_stop(struct seq_file *m, void *v)
{
}

/* Memory counters of one process, pages. */
struct tk_proc_mem {
	u64 rss;
	u64 hiwater;
	u64 total_vm;
};

/*
 * Read @p's memory counters from the first of its threads that still has
 * an mm (a zombie leader has none).  Caller holds rcu_read_lock().
 * Returns false if no thread has one: the process is leaving.
 */
static bool tk_proc_read_mem(struct task_struct *p, struct tk_proc_mem *mem)
{
	struct task_struct *t;
	bool found = false;

	for_each_thread(p, t) {
		task_lock(t);	/* a spinlock: keeps t->mm, fine under RCU */
		if (t->mm) {
			mem->rss = get_mm_rss(t->mm);
			mem->hiwater = get_mm_hiwater_rss(t->mm);
			mem->total_vm = READ_ONCE(t->mm->total_vm);
			found = true;
		}
		task_unlock(t);
		if (found)
			break;
	}
	return found;
}

/*
 * CPU time of the thread group, ns: the scheduler's own runtime of the live
 * threads plus what the dead ones left in signal->sum_sched_runtime, the
 * total /proc/PID/stat scales utime and stime to (thread_group_cputime()).
 * Tick-sampled utime + stime lose ticks when the host is busy (seen under
 * QEMU TCG: 75% for a busy loop that /proc showed at 99%).  A running
 * thread's sum_exec_runtime lags by at most a tick.  Caller holds
 * rcu_read_lock().
 */
static u64 tk_proc_cpu_ns(struct task_struct *p)
{
	struct task_struct *t;
	u64 cpu_ns = READ_ONCE(p->signal->sum_sched_runtime);

	for_each_thread(p, t)
		cpu_ns += READ_ONCE(t->se.sum_exec_runtime);
	return cpu_ns;
}

static int tk_procs_show(struct seq_file *m, void *v)
{
	struct task_struct *p;
	struct tk_proc_mem mem;
	char comm[TASK_COMM_LEN];
	pid_t ppid;
	uid_t uid;
	u64 cpu_ns;

	if (v == SEQ_START_TOKEN) {
		seq_puts(m, "# pid ppid uid state rss_kib hiwater_rss_kib "
			 "total_vm_kib cpu_ns start_ns threads comm\n");
		return 0;
	}
	p = *(struct task_struct **)v;

	rcu_read_lock();
	if (!pid_alive(p) || !tk_proc_read_mem(p, &mem)) {
		rcu_read_unlock();
		return SEQ_SKIP;
	}
	cpu_ns = tk_proc_cpu_ns(p);
	ppid = rcu_dereference(p->real_parent)->tgid;
	uid = from_kuid_munged(&init_user_ns, task_uid(p));
	task_lock(p);
	strscpy_pad(comm, p->comm, sizeof(comm));
	task_unlock(p);
	rcu_read_unlock();

	seq_printf(m, "%d %d %u %c %llu %llu %llu %llu %llu %d ",
		   p->tgid, ppid, uid, task_state_to_char(p),
		   TK_PAGES_TO_KIB(mem.rss), TK_PAGES_TO_KIB(mem.hiwater),
		   TK_PAGES_TO_KIB(mem.total_vm), cpu_ns, p->start_time,
		   get_nr_threads(p));
	seq_escape(m, comm, TK_ESCAPE);
	seq_putc(m, '\n');
	return 0;
}

static const struct seq_operations tk_procs_seq_ops = {
	.start = tk_procs_start,
	.next = tk_procs_next,
	.stop = tk_procs_stop,
	.show = tk_procs_show,
};

static int tk_procs_open(struct inode *inode, struct file *file)
{
	struct tk_procs_file *f;
	int ret;

	f = tk_procs_snapshot();
	if (!f)
		return -ENOMEM;
	ret = seq_open(file, &tk_procs_seq_ops);
	if (ret) {
		tk_procs_free(f);
		return ret;
	}
	((struct seq_file *)file->private_data)->private = f;
	return 0;
}

static int tk_procs_release(struct inode *inode, struct file *file)
{
	struct seq_file *m = file->private_data;

	tk_procs_free(m->private);
	return seq_release(inode, file);
}

static const struct proc_ops tk_procs_ops = {
	.proc_open = tk_procs_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = tk_procs_release,
};

/* ---- meminfo -------------------------------------------------------- */

/*
 * As /proc/meminfo computes them.  cached = file pages - swap cache -
 * buffers; /proc/meminfo subtracts total_swapcache_pages(), which is not
 * exported, so the NR_SWAPCACHE node counter (the same pages) is used.
 * used = total - free - buffers - cached (the `free` convention without
 * reclaimable slab).
 */
static int tk_meminfo_show(struct seq_file *m, void *v)
{
	struct sysinfo i;
	long cached, avail, used;

	si_meminfo(&i);
	avail = si_mem_available();
	cached = global_node_page_state(NR_FILE_PAGES) -
		 global_node_page_state(NR_SWAPCACHE) - i.bufferram;
	if (cached < 0)
		cached = 0;
	used = i.totalram - i.freeram - i.bufferram - cached;
	if (used < 0)
		used = 0;

	seq_printf(m, "total_kib %llu\n", TK_PAGES_TO_KIB(i.totalram));
	seq_printf(m, "free_kib %llu\n", TK_PAGES_TO_KIB(i.freeram));
	seq_printf(m, "used_kib %llu\n", TK_PAGES_TO_KIB(used));
	seq_printf(m, "buffers_kib %llu\n", TK_PAGES_TO_KIB(i.bufferram));
	seq_printf(m, "cached_kib %llu\n", TK_PAGES_TO_KIB(cached));
	seq_printf(m, "available_kib %llu\n", TK_PAGES_TO_KIB(avail));
	return 0;
}

/* ---- stats ---------------------------------------------------------- */

/* "<name> off" or "<name> <id>": a filter as the stats file shows it. */
void tk_seq_filter(struct seq_file *m, const char *name, u64 filter)
{
	if (filter == TK_FILTER_OFF)
		seq_printf(m, "%s off\n", name);
	else
		seq_printf(m, "%s %llu\n", name, filter - 1);
}

static int tk_stats_show(struct seq_file *m, void *v)
{
	struct tk_hook_stats hooks[TK_HOOK_MAX];
	struct tk_ring_snap snap;
	u32 mask = READ_ONCE(tk_event_mask);
	bool first = true;
	int i, k;

	tk_ring_snapshot(&snap);
	tk_probes_stats(hooks);

	seq_printf(m, "record_version %d\n", TK_RECORD_VERSION);
	seq_printf(m, "ring_size %u\n", snap.size);
	seq_printf(m, "ring_fill %llu\n", snap.fill);
	seq_printf(m, "read_lost %llu\n", snap.read_lost);
	seq_printf(m, "cleared %llu\n", snap.cleared);
	tk_seq_filter(m, "uid_filter", READ_ONCE(tk_uid_filter));
	tk_seq_filter(m, "ppid_filter", READ_ONCE(tk_ppid_filter));
	seq_puts(m, "events ");
	for (i = 1; i <= TK_EVENT_MAX; i++) {
		if (!(mask & TK_EVENT_BIT(i)))
			continue;
		seq_printf(m, "%s%s", first ? "" : ",", tk_event_names[i]);
		first = false;
	}
	seq_puts(m, first ? "none\n" : "\n");
	for (i = 1; i <= TK_EVENT_MAX; i++) {
		seq_printf(m, "event %s", tk_event_names[i]);
		for (k = 0; k < TK_NKINDS; k++)
			seq_printf(m, " %s %llu", tk_counter_names[k],
				   snap.ev[i].n[k]);
		seq_putc(m, '\n');
	}
	for (i = 0; i < TK_HOOK_MAX; i++)
		seq_printf(m, "hook %s count %llu total_ns %llu missed %lu\n",
			   hooks[i].symbol, hooks[i].count, hooks[i].total_ns,
			   hooks[i].missed);
	return 0;
}

/* ---- the directory -------------------------------------------------- */

int tk_procfs_create(void)
{
	bool group = tk_proc_gid >= 0;
	umode_t rd = group ? 0440 : 0400;
	kgid_t gid = GLOBAL_ROOT_GID;
	struct proc_dir_entry *e[4];
	int i;

	if (group) {
		gid = make_kgid(&init_user_ns, tk_proc_gid);
		if (!gid_valid(gid)) {
			pr_err("proc_gid %d is not a valid group\n", tk_proc_gid);
			return -EINVAL;
		}
	}
	tk_proc_dir = proc_mkdir_mode(TK_PROC_DIR, group ? 0550 : 0500, NULL);
	if (!tk_proc_dir) {
		/* or no memory; most likely a name clash */
		pr_err("cannot create /proc/%s\n", TK_PROC_DIR);
		return -EEXIST;
	}
	proc_set_user(tk_proc_dir, GLOBAL_ROOT_UID, gid);

	e[0] = proc_create("events", rd, tk_proc_dir, &tk_events_ops);
	e[1] = proc_create("processes", rd, tk_proc_dir, &tk_procs_ops);
	e[2] = proc_create_single("meminfo", rd, tk_proc_dir, tk_meminfo_show);
	e[3] = proc_create_single("stats", rd, tk_proc_dir, tk_stats_show);
	for (i = 0; i < ARRAY_SIZE(e); i++) {
		if (!e[i])
			goto remove_dir;
		proc_set_user(e[i], GLOBAL_ROOT_UID, gid);
	}
	if (!proc_create("control", 0200, tk_proc_dir, &tk_control_ops) ||
	    !proc_create("vm", 0600, tk_proc_dir, &tk_vm_ops))
		goto remove_dir;
	if (!proc_create("quota", 0600, tk_proc_dir, &tk_quota_ops))
		goto remove_dir;
	return 0;

remove_dir:
	pr_err("cannot create the files of /proc/%s\n", TK_PROC_DIR);
	proc_remove(tk_proc_dir);
	tk_proc_dir = NULL;
	return -ENOMEM;
}

/* Waits for running file operations; calls release for open files. */
void tk_procfs_remove(void)
{
	proc_remove(tk_proc_dir);
	tk_proc_dir = NULL;
}
