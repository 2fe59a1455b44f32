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
 *          it changes only through brk, mmap, munmap, mremap and
 *          mprotect, so it is read when each of those syscalls returns
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
 * /proc/toolkit/quota, root only:
 *   read    "# pid start_ns comm heap heap_quota files files_quota state"
 *           then one row per tracked process (quota 0: none), values live
 *   write   set PID [heap=BYTES] [files=N]   (at least one key, each > 0)
 *           clear PID
 *           reset                            (drop every quota)
 *           several commands, one per line; all are parsed and checked
 *           before any is applied: -EINVAL on garbage, pid 1, a kernel
 *           thread or the writer itself; -ESRCH for no such process (or,
 *           for clear, no quota); -ENOSPC past TK_QUOTA_MAX entries.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/ctype.h>
#include <linux/fdtable.h>
#include <linux/hashtable.h>
#include <linux/kprobes.h>
#include <linux/limits.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/ptrace.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/threads.h>
#include <linux/uaccess.h>

#include "toolkit_lkm.h"

#define TK_QUOTA_MAX		1024	/* tracked processes */
#define TK_QUOTA_BITS		6	/* 64 hash buckets */
#define TK_QUOTA_WRITE_MAX	1024	/* bytes per write */
#define TK_QUOTA_CMDS		16	/* commands per write */

struct tk_quota {
	struct hlist_node node;
	struct rcu_head rcu;
	pid_t tgid;
	u64 start_ns;		/* group leader's start_time */
	u64 heap_quota;		/* bytes; 0: none */
	u64 files_quota;	/* descriptors; 0: none */
	u32 killed;		/* TK_QUOTA_* that killed it; 0: tracking */
};

static DEFINE_HASHTABLE(tk_quota_table, TK_QUOTA_BITS);
static DEFINE_SPINLOCK(tk_quota_lock);	/* writers of the table */
static DEFINE_MUTEX(tk_quota_write_lock); /* one write applies at a time */
static atomic_t tk_quota_count = ATOMIC_INIT(0);

/* ---- the table ------------------------------------------------------ */

/* Under rcu_read_lock() or tk_quota_lock. */
static struct tk_quota *tk_quota_find(pid_t tgid, u64 start_ns)
{
	struct tk_quota *q;

	hash_for_each_possible_rcu(tk_quota_table, q, node, tgid)
		if (q->tgid == tgid && q->start_ns == start_ns)
			return q;
	return NULL;
}

/* Under tk_quota_lock. */
static void tk_quota_remove(struct tk_quota *q)
{
	hash_del_rcu(&q->node);
	atomic_dec(&tk_quota_count);
	kfree_rcu(q, rcu);
}

/* ---- the hooks ------------------------------------------------------ */

static u64 tk_open_fds(struct files_struct *files)
{
	struct fdtable *fdt;
	u64 n;

	rcu_read_lock();
	fdt = files_fdtable(files);
	n = bitmap_weight(fdt->open_fds, fdt->max_fds);
	rcu_read_unlock();
	return n;
}

static u64 tk_heap_bytes(struct mm_struct *mm)
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
	struct task_struct *exec_task;
	struct tk_quota *q;
	unsigned long flags;

	if (!atomic_read(&tk_quota_count) || (tsk->flags & PF_KTHREAD) ||
	    tsk->pid != tsk->tgid)
		return 0;
	exec_task = READ_ONCE(tsk->signal->group_exec_task);
	if (exec_task && exec_task != tsk)
		return 0;	/* de_thread(): the process lives on */
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

static struct kprobe tk_quota_kprobes[] = {
	{ .symbol_name = "fd_install", .pre_handler = tk_fd_install_pre },
	{ .symbol_name = "do_exit", .pre_handler = tk_quota_exit_pre },
};

#define TK_HEAP_RET(sym)	\
	{ .kp.symbol_name = sym, .entry_handler = tk_quota_entry, \
	  .handler = tk_quota_heap_ret }
#define TK_FILES_RET(sym)	\
	{ .kp.symbol_name = sym, .entry_handler = tk_quota_entry, \
	  .handler = tk_quota_files_ret }

/* x86-64 syscall entry points (compat 32-bit syscalls are not hooked) */
static struct kretprobe tk_quota_kretprobes[] = {
	TK_HEAP_RET("__x64_sys_brk"),
	TK_HEAP_RET("__x64_sys_mmap"),
	TK_HEAP_RET("__x64_sys_munmap"),
	TK_HEAP_RET("__x64_sys_mremap"),
	TK_HEAP_RET("__x64_sys_mprotect"),
	TK_FILES_RET("__x64_sys_dup2"),
	TK_FILES_RET("__x64_sys_dup3"),
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
static unsigned long tk_quota_missed(void)
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

/* ---- processes ------------------------------------------------------ */

/* The live task of (@tgid, @start_ns), pinned, or NULL. */
static struct task_struct *tk_quota_task(pid_t tgid, u64 start_ns)
{
	struct task_struct *p;

	rcu_read_lock();
	p = pid_task(find_pid_ns(tgid, &init_pid_ns), PIDTYPE_TGID);
	if (p && (p->start_time != start_ns || p->exit_state ||
		  (p->flags & PF_EXITING)))
		p = NULL;
	if (p)
		get_task_struct(p);
	rcu_read_unlock();
	return p;
}

/* Drop the entries whose process is gone (see the race at the top). */
static void tk_quota_prune(void)
{
	struct task_struct *p;
	struct hlist_node *tmp;
	struct tk_quota *q;
	int bkt;

	spin_lock_irq(&tk_quota_lock);
	rcu_read_lock();
	hash_for_each_safe(tk_quota_table, bkt, tmp, q, node) {
		p = pid_task(find_pid_ns(q->tgid, &init_pid_ns), PIDTYPE_TGID);
		if (!p || p->start_time != q->start_ns || p->exit_state)
			tk_quota_remove(q);
	}
	rcu_read_unlock();
	spin_unlock_irq(&tk_quota_lock);
}

/* ---- read ----------------------------------------------------------- */

struct tk_quota_row {
	pid_t tgid;
	u64 start_ns;
	u64 heap_quota;
	u64 files_quota;
	u32 killed;
};

struct tk_quota_file {
	unsigned int nr;
	struct tk_quota_row rows[];
};

static const char *tk_quota_state(u32 killed)
{
	switch (killed) {
	case TK_QUOTA_HEAP:
		return "killed-heap";
	case TK_QUOTA_FILES:
		return "killed-files";
	default:
		return "tracking";
	}
}

static int tk_quota_show(struct seq_file *m, void *v)
{
	struct tk_quota_file *f = m->private;
	char comm[TASK_COMM_LEN];
	struct task_struct *p;
	struct mm_struct *mm;
	unsigned int i;
	u64 heap, files;

	seq_printf(m, "# probes_missed %lu\n", tk_quota_missed());
	seq_puts(m, "# pid start_ns comm heap heap_quota files files_quota state\n");
	for (i = 0; i < f->nr; i++) {
		const struct tk_quota_row *r = &f->rows[i];

		p = tk_quota_task(r->tgid, r->start_ns);
		if (!p)
			continue;	/* exited since open() */
		get_task_comm(comm, p);
		heap = 0;
		mm = get_task_mm(p);
		if (mm) {
			heap = tk_heap_bytes(mm);
			mmput(mm);
		}
		files = 0;
		task_lock(p);
		if (p->files)
			files = tk_open_fds(p->files);
		task_unlock(p);
		put_task_struct(p);
		seq_printf(m, "%d %llu ", r->tgid, r->start_ns);
		seq_escape(m, comm, " \t\n\\");
		seq_printf(m, " %llu %llu %llu %llu %s\n", heap, r->heap_quota,
			   files, r->files_quota, tk_quota_state(r->killed));
	}
	return 0;
}

/* Snapshot the table at open(): a consistent list, no lock while shown. */
static int tk_quota_open(struct inode *inode, struct file *file)
{
	struct tk_quota_file *f;
	struct tk_quota *q;
	unsigned int n = 0;
	int bkt, ret;

	if (!(file->f_mode & FMODE_READ))
		return single_open(file, NULL, NULL);
	tk_quota_prune();
	f = kvzalloc(struct_size(f, rows, TK_QUOTA_MAX), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	rcu_read_lock();
	hash_for_each_rcu(tk_quota_table, bkt, q, node) {
		if (n == TK_QUOTA_MAX)
			break;
		f->rows[n++] = (struct tk_quota_row){
			.tgid = q->tgid, .start_ns = q->start_ns,
			.heap_quota = READ_ONCE(q->heap_quota),
			.files_quota = READ_ONCE(q->files_quota),
			.killed = READ_ONCE(q->killed) };
	}
	rcu_read_unlock();
	f->nr = n;
	ret = single_open(file, tk_quota_show, f);
	if (ret)
		kvfree(f);
	return ret;
}

static int tk_quota_release(struct inode *inode, struct file *file)
{
	struct seq_file *m = file->private_data;

	kvfree(m->private);
	return single_release(inode, file);
}

/* ---- write ---------------------------------------------------------- */

enum tk_quota_op { TK_QOP_SET, TK_QOP_CLEAR, TK_QOP_RESET };

struct tk_quota_cmd {
	enum tk_quota_op op;
	pid_t tgid;
	u64 heap;		/* 0: not given */
	u64 files;		/* 0: not given */
	u64 start_ns;		/* filled by the check */
	struct tk_quota *new;	/* preallocated for a set of a new pid */
};

/* "heap=N" or "files=N", N decimal, > 0; each key once. */
static int tk_quota_parse_kv(char *tok, struct tk_quota_cmd *cmd)
{
	char *val = strchr(tok, '=');
	u64 *slot, n;

	if (!val)
		return -EINVAL;
	*val++ = '\0';
	if (!strcmp(tok, "heap"))
		slot = &cmd->heap;
	else if (!strcmp(tok, "files"))
		slot = &cmd->files;
	else
		return -EINVAL;
	if (*slot || !isdigit(*val) || kstrtou64(val, 10, &n) || !n)
		return -EINVAL;
	if (slot == &cmd->files && n > INT_MAX)
		return -EINVAL;
	*slot = n;
	return 0;
}

static int tk_quota_parse(char *line, struct tk_quota_cmd *cmd)
{
	char *verb = strsep(&line, " \t");
	char *tok;
	u32 pid;
	int ret;

	memset(cmd, 0, sizeof(*cmd));
	if (!strcmp(verb, "reset")) {
		cmd->op = TK_QOP_RESET;
		return line && *skip_spaces(line) ? -EINVAL : 0;
	}
	if (!strcmp(verb, "set"))
		cmd->op = TK_QOP_SET;
	else if (!strcmp(verb, "clear"))
		cmd->op = TK_QOP_CLEAR;
	else
		return -EINVAL;
	do {
		tok = strsep(&line, " \t");
	} while (tok && !*tok);
	if (!tok || !isdigit(*tok) || kstrtou32(tok, 10, &pid) || !pid ||
	    pid > PID_MAX_LIMIT)
		return -EINVAL;
	cmd->tgid = pid;
	while ((tok = strsep(&line, " \t")) != NULL) {
		if (!*tok)
			continue;
		if (cmd->op != TK_QOP_SET)
			return -EINVAL;
		ret = tk_quota_parse_kv(tok, cmd);
		if (ret)
			return ret;
	}
	if (cmd->op == TK_QOP_SET && !cmd->heap && !cmd->files)
		return -EINVAL;
	return 0;
}

/*
 * Check a parsed command against the system: the process exists (-ESRCH),
 * may be limited (-EINVAL: pid 1, a kernel thread, the writer itself), and
 * a set of a new pid gets its entry allocated now, so applying cannot fail.
 */
static int tk_quota_prepare(struct tk_quota_cmd *cmd)
{
	struct task_struct *p;
	int ret = 0;

	if (cmd->op == TK_QOP_RESET)
		return 0;
	rcu_read_lock();
	p = pid_task(find_pid_ns(cmd->tgid, &init_pid_ns), PIDTYPE_TGID);
	if (!p || p->exit_state || (p->flags & PF_EXITING))
		ret = -ESRCH;
	else if (cmd->op == TK_QOP_SET &&
		 (cmd->tgid == 1 || (p->flags & PF_KTHREAD) ||
		  same_thread_group(p, current)))
		ret = -EINVAL;
	else
		cmd->start_ns = p->start_time;
	if (!ret && cmd->op == TK_QOP_CLEAR &&
	    !tk_quota_find(cmd->tgid, cmd->start_ns))
		ret = -ESRCH;
	rcu_read_unlock();
	if (ret || cmd->op != TK_QOP_SET)
		return ret;
	cmd->new = kzalloc(sizeof(*cmd->new), GFP_KERNEL);
	return cmd->new ? 0 : -ENOMEM;
}

/* Under tk_quota_lock: cannot fail (tk_quota_prepare() did the checks). */
static void tk_quota_apply(struct tk_quota_cmd *cmd)
{
	struct hlist_node *tmp;
	struct tk_quota *q;
	int bkt;

	switch (cmd->op) {
	case TK_QOP_RESET:
		hash_for_each_safe(tk_quota_table, bkt, tmp, q, node)
			tk_quota_remove(q);
		break;
	case TK_QOP_CLEAR:
		q = tk_quota_find(cmd->tgid, cmd->start_ns);
		if (q)
			tk_quota_remove(q);
		break;
	case TK_QOP_SET:
		q = tk_quota_find(cmd->tgid, cmd->start_ns);
		if (!q) {
			q = cmd->new;
			cmd->new = NULL;
			q->tgid = cmd->tgid;
			q->start_ns = cmd->start_ns;
			hash_add_rcu(tk_quota_table, &q->node, q->tgid);
			atomic_inc(&tk_quota_count);
		}
		if (cmd->heap)
			WRITE_ONCE(q->heap_quota, cmd->heap);
		if (cmd->files)
			WRITE_ONCE(q->files_quota, cmd->files);
		break;
	}
}

static ssize_t tk_quota_write(struct file *file, const char __user *ubuf,
			      size_t count, loff_t *ppos)
{
	struct tk_quota_cmd cmds[TK_QUOTA_CMDS];
	char *buf, *rest, *line;
	int i, n = 0, adds = 0;
	ssize_t ret;

	if (!count || count > TK_QUOTA_WRITE_MAX)
		return -EINVAL;
	buf = memdup_user_nul(ubuf, count);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	ret = -EINVAL;
	if (strlen(buf) != count)
		goto free_buf;		/* embedded NUL */
	rest = buf;
	while ((line = strsep(&rest, "\n")) != NULL) {
		line = strim(line);
		if (!*line)
			continue;
		if (n == TK_QUOTA_CMDS || tk_quota_parse(line, &cmds[n]))
			goto free_buf;
		n++;
	}
	if (!n)
		goto free_buf;

	mutex_lock(&tk_quota_write_lock);
	tk_quota_prune();
	for (i = 0; i < n; i++) {
		ret = tk_quota_prepare(&cmds[i]);
		if (ret)
			goto free_cmds;
		adds += cmds[i].new != NULL;
	}
	ret = -ENOSPC;
	if (atomic_read(&tk_quota_count) + adds > TK_QUOTA_MAX)
		goto free_cmds;
	spin_lock_irq(&tk_quota_lock);
	for (i = 0; i < n; i++)
		tk_quota_apply(&cmds[i]);
	spin_unlock_irq(&tk_quota_lock);
	ret = count;
free_cmds:
	mutex_unlock(&tk_quota_write_lock);
	for (i = 0; i < n; i++)
		kfree(cmds[i].new);	/* unused: an existing entry, or failed */
free_buf:
	kfree(buf);
	return ret;
}

const struct proc_ops tk_quota_ops = {
	.proc_open = tk_quota_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_write = tk_quota_write,
	.proc_release = tk_quota_release,
};
