// SPDX-License-Identifier: GPL-2.0
/*
 * control.c - /proc/toolkit/control, root-only, write-only.
 *
 * One write holds one or more commands separated by newlines:
 *   uid <n> | uid off     filter events by real uid (init user namespace)
 *   ppid <n> | ppid off   only events of processes whose parent is tgid n
 *                         (a workload's children: what a benchmark scopes to)
 *   events <list>         enable event types: fork,clone,exec,exit | all | none
 *   clear                 discard the queued records (counted as cleared)
 *   reset                 zero all counters and handler times
 * Every command is parsed and validated before any is applied, so a write
 * is either applied completely or rejected with -EINVAL and changes
 * nothing.  Writes longer than TK_CONTROL_MAX bytes are rejected.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/proc_fs.h>
#include <linux/string.h>
#include <linux/threads.h>
#include <linux/uaccess.h>
#include <linux/uidgid.h>

#include "toolkit_lkm.h"

#define TK_CONTROL_CMDS	16

u64 tk_uid_filter = TK_FILTER_OFF;
u64 tk_ppid_filter = TK_FILTER_OFF;
u32 tk_event_mask = TK_EVENT_ALL;

static DEFINE_MUTEX(tk_control_lock);

enum tk_op {
	TK_OP_UID,
	TK_OP_PPID,
	TK_OP_EVENTS,
	TK_OP_CLEAR,
	TK_OP_RESET,
};

struct tk_cmd {
	enum tk_op op;
	u64 arg;
};

static int tk_parse_events(char *list, u32 *mask)
{
	char *name;
	u32 m = 0;
	int i;

	if (!strcmp(list, "all")) {
		*mask = TK_EVENT_ALL;
		return 0;
	}
	if (!strcmp(list, "none")) {
		*mask = 0;
		return 0;
	}
	while ((name = strsep(&list, ",")) != NULL) {
		for (i = 1; i <= TK_EVENT_MAX; i++)
			if (!strcmp(name, tk_event_names[i]))
				break;
		if (i > TK_EVENT_MAX)
			return -EINVAL;
		m |= TK_EVENT_BIT(i);
	}
	*mask = m;
	return 0;
}

/* Parse one non-empty line into @cmd. */
static int tk_parse_cmd(char *line, struct tk_cmd *cmd)
{
	char *verb = strsep(&line, " \t");
	char *arg = line ? skip_spaces(line) : NULL;
	u32 val;

	if (arg && !*arg)
		arg = NULL;
	if (arg && strpbrk(arg, " \t"))
		return -EINVAL;		/* one argument at most */

	if (!strcmp(verb, "clear") || !strcmp(verb, "reset")) {
		if (arg)
			return -EINVAL;
		cmd->op = verb[0] == 'c' ? TK_OP_CLEAR : TK_OP_RESET;
		return 0;
	}
	if (!arg)
		return -EINVAL;
	if (!strcmp(verb, "uid")) {
		cmd->op = TK_OP_UID;
		if (!strcmp(arg, "off")) {
			cmd->arg = TK_FILTER_OFF;
			return 0;
		}
		if (kstrtou32(arg, 10, &val) || val == (u32)-1)
			return -EINVAL;
		cmd->arg = TK_FILTER_ENCODE(val);
		return 0;
	}
	if (!strcmp(verb, "ppid")) {
		cmd->op = TK_OP_PPID;
		if (!strcmp(arg, "off")) {
			cmd->arg = TK_FILTER_OFF;
			return 0;
		}
		if (kstrtou32(arg, 10, &val) || !val || val > PID_MAX_LIMIT)
			return -EINVAL;
		cmd->arg = TK_FILTER_ENCODE(val);
		return 0;
	}
	if (!strcmp(verb, "events")) {
		cmd->op = TK_OP_EVENTS;
		if (tk_parse_events(arg, &val))
			return -EINVAL;
		cmd->arg = val;
		return 0;
	}
	return -EINVAL;
}

static void tk_apply_cmd(const struct tk_cmd *cmd)
{
	switch (cmd->op) {
	case TK_OP_UID:
		WRITE_ONCE(tk_uid_filter, cmd->arg);
		break;
	case TK_OP_PPID:
		WRITE_ONCE(tk_ppid_filter, cmd->arg);
		break;
	case TK_OP_EVENTS:
		WRITE_ONCE(tk_event_mask, (u32)cmd->arg);
		break;
	case TK_OP_CLEAR:
		tk_ring_clear();
		break;
	case TK_OP_RESET:
		tk_ring_reset_counters();
		tk_probes_reset();
		break;
	}
}

static ssize_t tk_control_write(struct file *file, const char __user *ubuf,
				size_t count, loff_t *ppos)
{
	struct tk_cmd cmds[TK_CONTROL_CMDS];
	char buf[TK_CONTROL_MAX + 1];
	char *rest = buf, *line;
	int i, n = 0;

	if (!count || count > TK_CONTROL_MAX)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	if (strlen(buf) != count)
		return -EINVAL;		/* embedded NUL */

	while ((line = strsep(&rest, "\n")) != NULL) {
		line = strim(line);
		if (!*line)
			continue;
		if (n == TK_CONTROL_CMDS || tk_parse_cmd(line, &cmds[n]))
			return -EINVAL;
		n++;
	}
	if (!n)
		return -EINVAL;

	mutex_lock(&tk_control_lock);
	for (i = 0; i < n; i++)
		tk_apply_cmd(&cmds[i]);
	mutex_unlock(&tk_control_lock);
	return count;
}

const struct proc_ops tk_control_ops = {
	.proc_write = tk_control_write,
	.proc_lseek = noop_llseek,
};
