// SPDX-License-Identifier: GPL-2.0
/*
 * quota_proc.c - /proc/toolkit/quota: the quotas of quota.c, read and set.
 *
 * /proc/toolkit/quota, root only:
 *   read    "# probes_missed N" (hook hits not checked: kretprobe instances
 *           ran out), "# pid start_ns comm heap heap_quota files
 *           files_quota state", then one row per tracked process (quota
 *           0: none; heap and files read live at the read)
 *   write   set PID [heap=BYTES] [files=N]   (at least one key, each > 0)
 *           clear PID
 *           reset                            (drop every quota)
 *           several commands, one per line; all are parsed and checked
 *           before any is applied: -EINVAL on garbage, pid 1, a kernel
 *           thread or the writer itself; -ESRCH for no such process (or,
 *           for clear, no quota); -ENOSPC past TK_QUOTA_MAX entries.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/limits.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
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

#include "quota.h"

#define TK_QUOTA_WRITE_MAX	1024	/* bytes per write */
#define TK_QUOTA_CMDS		16	/* commands per write */

static DEFINE_MUTEX(tk_quota_write_lock); /* one write applies at a time */

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
	seq_puts(m,
		 "# pid start_ns comm heap heap_quota files files_quota state\n");
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
		kfree(cmds[i].new);	/* unused (entry existed, or failed) */
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
