// SPDX-License-Identifier: GPL-2.0
/*
 * vm.c - /proc/toolkit/vm, root-only (0600), read-write.
 *
 * A write of a decimal pid ("1234" or "1234\n", at most TK_VM_WRITE_MAX
 * bytes) selects that process for the open file that wrote it; a read of
 * the same open file prints its memory layout.  Two open files never see
 * each other's selection: it lives in the seq_file's private struct.
 *
 * Write errors (the previous selection is kept on every error):
 *   EINVAL  empty, overlong, not a decimal number, 0, or a kernel thread
 *           (a task with PF_KTHREAD has no user memory to show)
 *   ESRCH   no task with that pid in the writer's pid namespace, or one
 *           that has already released its memory (a zombie)
 * Read errors:
 *   EINVAL  nothing selected yet
 *   ESRCH   the selected process has exited (or is exiting: no mm left)
 *
 * The selection is a reference on the struct pid, not a number, so a
 * recycled pid is never shown in place of the process that was selected.
 * A read pins the task (get_pid_task) and its mm (get_task_mm/mmput) and
 * holds the mmap read lock while it walks the VMAs; a target that exits
 * meanwhile only drops its own references, so nothing is freed under us.
 *
 * Output, one record a line, numbers in hex unless said otherwise:
 *   pid <tgid> <tid>            decimal
 *   comm <name>
 *   page_size <bytes>           decimal
 *   paging_levels <4|5>
 *   region <name> <start> <end> code, data, heap, stack (start_stack both
 *                               ends), stack_vma, args, env
 *   counter <name> <value>      decimal; rss_* and *_vm in pages
 *   vma <start> <end> <rwxp|s> <pgoff> <name>
 *                               name: a path (\n escaped), [heap], [stack],
 *                               [vdso]/[vvar] (special mappings), anon
 *   pgd <index> <start> <last> <raw> <next_pfn> <flag,flag,...>
 *                               a present entry of mm->pgd; <last> is the
 *                               last address it covers (inclusive)
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/dcache.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/limits.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/pid.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <asm/pgtable.h>

#include "toolkit_lkm.h"

#define TK_VM_WRITE_MAX	32

/* The state of one open file. */
struct tk_vm_file {
	struct mutex lock;	/* serialises writes against each other */
	struct pid *pid;	/* the selection, or NULL; a reference */
	char path[PATH_MAX];	/* d_path() buffer of the reader */
};

static void tk_vm_region(struct seq_file *m, const char *name,
			 unsigned long start, unsigned long end)
{
	seq_printf(m, "region %s %lx %lx\n", name, start, end);
}

/*
 * An RSS counter as /proc/PID/status reads it.  From 6.2 rss_stat is a
 * percpu_counter whose cheap read (get_mm_counter) leaves out the per-CPU
 * deltas, hundreds of pages off; status sums them (get_mm_counter_sum: 6.16,
 * and backported to 6.12.y), and so does this.  On 6.1 it is an atomic.
 */
static unsigned long tk_rss(struct mm_struct *mm, int member)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	return percpu_counter_sum_positive(&mm->rss_stat[member]);
#else
	return get_mm_counter(mm, member);
#endif
}

static void tk_vm_counters(struct seq_file *m, struct mm_struct *mm)
{
	unsigned long anon = tk_rss(mm, MM_ANONPAGES);
	unsigned long file = tk_rss(mm, MM_FILEPAGES);
	unsigned long shmem = tk_rss(mm, MM_SHMEMPAGES);

	seq_printf(m, "counter rss_anon %lu\ncounter rss_file %lu\n"
		   "counter rss_shmem %lu\n", anon, file, shmem);
	/* get_mm_hiwater_rss(), from the summed counters, as status does */
	seq_printf(m, "counter hiwater_rss %lu\n",
		   max(READ_ONCE(mm->hiwater_rss), anon + file + shmem));
	seq_printf(m, "counter total_vm %lu\n", READ_ONCE(mm->total_vm));
	seq_printf(m, "counter locked_vm %lu\n", READ_ONCE(mm->locked_vm));
	seq_printf(m, "counter data_vm %lu\n", READ_ONCE(mm->data_vm));
	seq_printf(m, "counter exec_vm %lu\n", READ_ONCE(mm->exec_vm));
	seq_printf(m, "counter stack_vm %lu\n", READ_ONCE(mm->stack_vm));
	seq_printf(m, "counter map_count %d\n", READ_ONCE(mm->map_count));
}

/*
 * The path /proc/PID/maps shows for a mapped file.  From 6.8 a file mapped
 * through overlayfs is a backing file whose f_path is the real (lower) one;
 * maps shows the path the user opened (file_user_path), and so does this.
 */
static const struct path *tk_file_path(struct file *file)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	return file_user_path(file);
#else
	return &file->f_path;
#endif
}

/* The name column of a VMA, as /proc/PID/maps would name it. */
static void tk_vm_name(struct seq_file *m, struct tk_vm_file *f,
		       struct mm_struct *mm, struct vm_area_struct *vma)
{
	const char *name = NULL;
	char *p;

	if (vma->vm_file) {
		p = d_path(tk_file_path(vma->vm_file), f->path, sizeof(f->path));
		if (IS_ERR(p)) {
			seq_puts(m, "[path-error]");
			return;
		}
		seq_escape(m, p, "\n");
		return;
	}
	if (vma->vm_ops && vma->vm_ops->name)
		name = vma->vm_ops->name(vma);	/* [vdso], [vvar] */
	if (!name && vma->vm_start <= mm->brk && vma->vm_end >= mm->start_brk)
		name = "[heap]";
	if (!name && vma->vm_start <= mm->start_stack &&
	    vma->vm_end >= mm->start_stack)
		name = "[stack]";
	seq_puts(m, name ? name : "anon");
}

static void tk_vm_vmas(struct seq_file *m, struct tk_vm_file *f,
		       struct mm_struct *mm)
{
	struct vm_area_struct *vma;
	VMA_ITERATOR(vmi, mm, 0);

	for_each_vma(vmi, vma) {
		vm_flags_t fl = vma->vm_flags;

		seq_printf(m, "vma %lx %lx %c%c%c%c %lx ",
			   vma->vm_start, vma->vm_end,
			   fl & VM_READ ? 'r' : '-',
			   fl & VM_WRITE ? 'w' : '-',
			   fl & VM_EXEC ? 'x' : '-',
			   fl & VM_MAYSHARE ? 's' : 'p',
			   vma->vm_pgoff);
		tk_vm_name(m, f, mm, vma);
		seq_putc(m, '\n');
	}
}

/* The address where top-level entry @i starts, sign-extended. */
static unsigned long tk_pgd_start(unsigned int i)
{
	unsigned int va_bits = PGDIR_SHIFT + ilog2(PTRS_PER_PGD);
	unsigned long start = (unsigned long)i << PGDIR_SHIFT;

	if (start & BIT(va_bits - 1))
		start |= ~(BIT(va_bits) - 1);
	return start;
}

static const struct {
	pgdval_t bit;
	const char *name;
} tk_pgd_bits[] = {
	{ _PAGE_PRESENT, "present" },
	{ _PAGE_RW, "rw" },
	{ _PAGE_USER, "user" },
	{ _PAGE_PWT, "pwt" },
	{ _PAGE_PCD, "pcd" },
	{ _PAGE_ACCESSED, "accessed" },
	{ _PAGE_DIRTY, "dirty" },
	{ _PAGE_PSE, "pse" },
	{ _PAGE_GLOBAL, "global" },
	{ _PAGE_NX, "nx" },
};

/*
 * The present entries of the top-level table.  mm->pgd is the kernel's
 * copy; with page-table isolation the user half of that copy carries NX
 * (the user copy does not), see pti_set_user_pgtbl().  Present is the
 * entry's own bit, not pgd_present(): with 4-level paging the pgd level is
 * folded at run time and pgd_present() is always 1, while mm->pgd[] holds
 * the hardware's top level (PML4), whose present bit is what counts.
 */
static void tk_vm_pgd(struct seq_file *m, struct mm_struct *mm)
{
	unsigned int i, b;

	for (i = 0; i < PTRS_PER_PGD; i++) {
		pgd_t e = READ_ONCE(mm->pgd[i]);
		pgdval_t fl = pgd_flags(e);
		const char *sep = "";

		if (!(fl & _PAGE_PRESENT))
			continue;
		seq_printf(m, "pgd %u %lx %lx %lx %lx ", i, tk_pgd_start(i),
			   tk_pgd_start(i) + (BIT(PGDIR_SHIFT) - 1),
			   (unsigned long)pgd_val(e),
			   (unsigned long)((pgd_val(e) & PTE_PFN_MASK) >>
					   PAGE_SHIFT));
		for (b = 0; b < ARRAY_SIZE(tk_pgd_bits); b++) {
			if (!(fl & tk_pgd_bits[b].bit))
				continue;
			seq_printf(m, "%s%s", sep, tk_pgd_bits[b].name);
			sep = ",";
		}
		seq_putc(m, '\n');
	}
}

static int tk_vm_show(struct seq_file *m, void *v)
{
	struct tk_vm_file *f = m->private;
	struct vm_area_struct *vma;
	struct task_struct *task;
	struct mm_struct *mm;
	struct pid *pid;
	int ret = 0;

	mutex_lock(&f->lock);
	pid = get_pid(f->pid);
	mutex_unlock(&f->lock);
	if (!pid)
		return -EINVAL;
	task = get_pid_task(pid, PIDTYPE_PID);
	put_pid(pid);
	if (!task)
		return -ESRCH;
	mm = get_task_mm(task);
	if (!mm) {
		ret = -ESRCH;
		goto put_task;
	}
	seq_printf(m, "pid %d %d\ncomm %s\npage_size %lu\npaging_levels %d\n",
		   task_tgid_nr(task), task_pid_nr(task), task->comm,
		   PAGE_SIZE, pgtable_l5_enabled() ? 5 : 4);

	if (mmap_read_lock_killable(mm)) {
		ret = -EINTR;
		goto put_mm;
	}
	tk_vm_region(m, "code", mm->start_code, mm->end_code);
	tk_vm_region(m, "data", mm->start_data, mm->end_data);
	tk_vm_region(m, "heap", mm->start_brk, mm->brk);
	tk_vm_region(m, "stack", mm->start_stack, mm->start_stack);
	vma = vma_lookup(mm, mm->start_stack);
	if (vma)
		tk_vm_region(m, "stack_vma", vma->vm_start, vma->vm_end);
	tk_vm_region(m, "args", mm->arg_start, mm->arg_end);
	tk_vm_region(m, "env", mm->env_start, mm->env_end);
	tk_vm_counters(m, mm);
	tk_vm_vmas(m, f, mm);
	tk_vm_pgd(m, mm);
	mmap_read_unlock(mm);
put_mm:
	mmput(mm);
put_task:
	put_task_struct(task);
	return ret;
}

/* Parse a decimal pid: digits only, one trailing newline allowed. */
static int tk_vm_parse(const char __user *ubuf, size_t count, pid_t *out)
{
	char buf[TK_VM_WRITE_MAX + 1];
	size_t i, n = count;
	int val;

	if (!count || count > TK_VM_WRITE_MAX)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	if (buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	if (!n)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!isdigit(buf[i]))
			return -EINVAL;
	if (kstrtoint(buf, 10, &val) || val <= 0)
		return -EINVAL;
	*out = val;
	return 0;
}

static ssize_t tk_vm_write(struct file *file, const char __user *ubuf,
			   size_t count, loff_t *ppos)
{
	struct seq_file *m = file->private_data;
	struct tk_vm_file *f = m->private;
	struct task_struct *task;
	struct pid *pid, *old;
	pid_t nr;
	int ret;

	ret = tk_vm_parse(ubuf, count, &nr);
	if (ret)
		return ret;
	pid = find_get_pid(nr);
	task = pid ? get_pid_task(pid, PIDTYPE_PID) : NULL;
	if (!task) {
		put_pid(pid);
		return -ESRCH;
	}
	/* a kernel thread has no mm: EINVAL; a zombie has lost it: ESRCH */
	ret = task->flags & PF_KTHREAD ? -EINVAL : 0;
	if (!ret) {
		struct mm_struct *mm = get_task_mm(task);

		if (mm)
			mmput(mm);
		else
			ret = -ESRCH;
	}
	put_task_struct(task);
	if (ret) {
		put_pid(pid);
		return ret;
	}
	mutex_lock(&f->lock);
	old = f->pid;
	f->pid = pid;
	mutex_unlock(&f->lock);
	put_pid(old);
	return count;
}

static int tk_vm_open(struct inode *inode, struct file *file)
{
	struct tk_vm_file *f = kzalloc(sizeof(*f), GFP_KERNEL);
	int ret;

	if (!f)
		return -ENOMEM;
	mutex_init(&f->lock);
	ret = single_open(file, tk_vm_show, f);
	if (ret)
		kfree(f);
	return ret;
}

static int tk_vm_release(struct inode *inode, struct file *file)
{
	struct tk_vm_file *f = ((struct seq_file *)file->private_data)->private;

	put_pid(f->pid);
	kfree(f);
	return single_release(inode, file);
}

const struct proc_ops tk_vm_ops = {
	.proc_open = tk_vm_open,
	.proc_read = seq_read,
	.proc_write = tk_vm_write,
	.proc_lseek = seq_lseek,
	.proc_release = tk_vm_release,
};
