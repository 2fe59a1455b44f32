/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm.c - one process's memory layout from BPF iterators, for
 * `toolkit inspect PID --backend ebpf` (toolkit/backends/ebpf_vm.py).
 * The eBPF counterpart of the module's /proc/toolkit/vm (lkm/vm.c).
 *
 *  bpf_iter__task      (>= 5.8) the selected process's leader: pid, comm,
 *                      paging depth, the mm's regions and counters, and
 *                      the present entries of the top-level page table
 *  bpf_iter__task_vma  (>= 5.12) every VMA of that process, with the name
 *                      /proc/PID/maps would give it
 *
 * The pid to show is in tk_vm_cfg (written by user space before each
 * walk); user space also restricts the walks to that process through the
 * iterator's link info (6.1+), and the programs filter by tgid as well,
 * since older kernels ignore that field.
 *
 * Output: text, line for line the module's format (see lkm/vm.c), so one
 * parser (toolkit/inspect/layout.py) reads both backends and the two
 * outputs can be compared line by line.  Three kinds of line are the BPF
 * side's own and user space turns or strips them (toolkit/backends/ebpf_vm.py):
 *   tk_gone <why>            no layout: kthread, or nomm (exiting)
 *   tk_mm <side> <address>   the mm the task walk read, and each VMA's
 *                            vm_mm (all must agree)
 *   tk_geom <pgdir_shift> <physical_mask>
 *   tk_geom_cpus <summed> <nr_cpu_ids>   (>= 6.2) CPUs whose RSS deltas
 *                            were added (at most TK_MM_MAX_CPUS)
 *   tk_pgd <index> <raw>     a present top-level entry, raw; user space
 *                            derives the module's "pgd" line from it (the
 *                            range from pgdir_shift, the frame through
 *                            physical_mask, the flag names from the bits):
 *                            formatting ten flags per entry here would
 *                            multiply the verifier's work by the 512
 *                            iterations of the loop
 *   tk_note <what> ...       something read differently from the module
 * A newline in a mapped file's path is not escaped here (the module prints
 * \012); user space finds the broken line and says so.
 *
 * What BPF cannot do as the module does: it cannot pin the mm
 * (get_task_mm) or take the mmap lock around both walks.  The task walk
 * reads the mm with bpf_probe_read_kernel (fault-safe: a mm freed under it
 * reads as garbage or fails, never crashes); the task_vma walk holds the
 * mmap read lock itself, per batch of VMAs.  The two walks are separate, so
 * user space checks that both saw the same mm and that the process still
 * exists afterwards.
 */
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/mm.h>
#include <linux/mm_types.h>
#include <linux/fs.h>
#include <linux/path.h>
#include <asm/pgtable_types.h>

#include "tk_mm.h"
#include "tk_iter.h"

/*
 * What user space tells the programs: the pid, and the addresses (from
 * /proc/kallsyms, 0 when absent) of the kernel variables a module reads
 * through macros BPF cannot expand.  Set by field name through BCC's
 * generated ctypes type, so no slot numbers are shared with Python.
 */
struct tk_vm_cfg {
	u64 pid;		/* tgid to show */
	u64 pgdir_shift;	/* &pgdir_shift (CONFIG_X86_5LEVEL) */
	u64 physical_mask;	/* &physical_mask (DYNAMIC_PHYSICAL_MASK) */
	u64 special_vmops;	/* &special_mapping_vmops */
	u64 legacy_vmops;	/* &legacy_special_mapping_vmops (< 6.11) */
	u64 pcpu_offsets;	/* __per_cpu_offset[] */
	u64 nr_cpu_ids;		/* &nr_cpu_ids */
};

BPF_ARRAY(tk_vm_cfg, struct tk_vm_cfg, 1);

#define TK_PGD_ENTRIES	512
#define TK_PATH_MAX	4096

/* Room too big for the 512-byte BPF stack: the top-level table, a path. */
struct tk_vm_scratch {
	u64 pgd[TK_PGD_ENTRIES];
	char path[TK_PATH_MAX];
};

BPF_PERCPU_ARRAY(tk_vm_buf, struct tk_vm_scratch, 1);

/*
 * seq_printf() from BPF: the format on the stack, the arguments as u64s
 * (bpf_seq_printf takes at most 12).
 */
#define TK_SEQ(seq, fmt, ...)						\
	({								\
		char _fmt[] = fmt;					\
		u64 _args[] = { __VA_ARGS__ };				\
		bpf_seq_printf(seq, _fmt, sizeof(_fmt), _args,		\
			       sizeof(_args));				\
	})
#define TK_SEQ0(seq, fmt)						\
	({								\
		char _fmt[] = fmt;					\
		bpf_seq_printf(seq, _fmt, sizeof(_fmt), NULL, 0);	\
	})

static __always_inline u64 tk_read_u64(u64 addr, u64 dflt)
{
	u64 val = dflt;

	if (addr && bpf_probe_read_kernel(&val, sizeof(val), (void *)addr))
		val = dflt;
	return val;
}

static __always_inline u32 tk_read_u32(u64 addr, u32 dflt)
{
	u32 val = dflt;

	if (addr && bpf_probe_read_kernel(&val, sizeof(val), (void *)addr))
		val = dflt;
	return val;
}

#define TK_MM(mm, field)						\
	({								\
		typeof((mm)->field) _v = 0;				\
		bpf_probe_read_kernel(&_v, sizeof(_v), &(mm)->field);	\
		_v;							\
	})

static __always_inline void tk_regions(struct seq_file *seq,
				       struct mm_struct *mm)
{
	u64 ss = TK_MM(mm, start_stack);

	TK_SEQ(seq, "region code %lx %lx\nregion data %lx %lx\n",
	       TK_MM(mm, start_code), TK_MM(mm, end_code),
	       TK_MM(mm, start_data), TK_MM(mm, end_data));
	TK_SEQ(seq, "region heap %lx %lx\nregion stack %lx %lx\n",
	       TK_MM(mm, start_brk), TK_MM(mm, brk), ss, ss);
	TK_SEQ(seq, "region args %lx %lx\nregion env %lx %lx\n",
	       TK_MM(mm, arg_start), TK_MM(mm, arg_end),
	       TK_MM(mm, env_start), TK_MM(mm, env_end));
}

static __always_inline void tk_counters(struct seq_file *seq,
					struct mm_struct *mm,
					struct tk_vm_cfg *cfg)
{
	u32 ncpus = tk_read_u32(cfg->nr_cpu_ids, 1);
	u64 pcpu = cfg->pcpu_offsets;
	long anon = tk_mm_counter_sum(mm, MM_ANONPAGES, pcpu, ncpus);
	long file = tk_mm_counter_sum(mm, MM_FILEPAGES, pcpu, ncpus);
	long shmem = tk_mm_counter_sum(mm, MM_SHMEMPAGES, pcpu, ncpus);
	unsigned long hiwater = TK_MM(mm, hiwater_rss);
	int map_count = TK_MM(mm, map_count);

	/* get_mm_hiwater_rss(): the peak is only stored on an RSS drop */
	if (hiwater < (unsigned long)(anon + file + shmem))
		hiwater = anon + file + shmem;
	TK_SEQ(seq, "counter rss_anon %lu\ncounter rss_file %lu\n"
	       "counter rss_shmem %lu\ncounter hiwater_rss %lu\n",
	       anon, file, shmem, hiwater);
	TK_SEQ(seq, "counter total_vm %lu\ncounter locked_vm %lu\n"
	       "counter data_vm %lu\ncounter exec_vm %lu\n",
	       TK_MM(mm, total_vm), TK_MM(mm, locked_vm),
	       TK_MM(mm, data_vm), TK_MM(mm, exec_vm));
	TK_SEQ(seq, "counter stack_vm %lu\ncounter map_count %d\n",
	       TK_MM(mm, stack_vm), map_count);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	TK_SEQ(seq, "tk_geom_cpus %u %u\n",
	       ncpus < TK_MM_MAX_CPUS ? ncpus : TK_MM_MAX_CPUS, ncpus);
#endif
}

/*
 * The top-level table: one read of its 4 KiB page (mm->pgd is in the
 * kernel's direct map) into the per-CPU buffer, then every present entry.
 * mm->pgd is the kernel's copy, as the module reads it; with page-table
 * isolation the user copy is the next page, which neither side shows.
 */
static __always_inline void tk_pgd(struct seq_file *seq, struct mm_struct *mm,
				   struct tk_vm_cfg *cfg)
{
	struct tk_vm_scratch *buf;
	u32 key = 0, i;
	u64 pgdp = TK_MM(mm, pgd);

	/* PGDIR_SHIFT is the variable pgdir_shift under CONFIG_X86_5LEVEL
	 * (39 or 48); without that option it is the constant 39 */
	TK_SEQ(seq, "tk_geom %u %lx\n", tk_read_u32(cfg->pgdir_shift, 39),
	       tk_read_u64(cfg->physical_mask, (1ULL << 52) - 1));
	buf = tk_vm_buf.lookup(&key);
	if (!buf)
		return;
	if (!pgdp || bpf_probe_read_kernel(buf->pgd, sizeof(buf->pgd),
					   (void *)pgdp)) {
		TK_SEQ(seq, "tk_note pgd-unreadable %lx\n", pgdp);
		return;
	}
	for (i = 0; i < TK_PGD_ENTRIES; i++) {
		u64 e = buf->pgd[i];

		if (e & _PAGE_PRESENT)
			TK_SEQ(seq, "tk_pgd %u %lx\n", i, e);
	}
}

BPF_ITER(task)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct mm_struct *mm = NULL;
	struct tk_vm_cfg *cfg;
	u32 key = 0, tgid = 0, pid = 0;
	unsigned int flags = 0;

	if (!task)
		return 0;
	cfg = tk_vm_cfg.lookup(&key);
	if (!cfg)
		return 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &task->tgid);
	bpf_probe_read_kernel(&pid, sizeof(pid), &task->pid);
	if (tgid != cfg->pid || pid != tgid)
		return 0;
	bpf_probe_read_kernel(&flags, sizeof(flags), &task->flags);
	if (flags & PF_KTHREAD) {
		TK_SEQ0(seq, "tk_gone kthread\n");
		return 0;
	}
	bpf_probe_read_kernel(&mm, sizeof(mm), &task->mm);
	if (!mm) {
		TK_SEQ0(seq, "tk_gone nomm\n");
		return 0;
	}
	TK_SEQ(seq, "pid %d %d\ncomm %s\npage_size %lu\n", tgid, pid,
	       (u64)&task->comm[0], PAGE_SIZE);
	TK_SEQ(seq, "tk_mm task %lx\n", (u64)mm);
	tk_regions(seq, mm);
	tk_counters(seq, mm, cfg);
	tk_pgd(seq, mm, cfg);
	return 0;
}

/*
 * >= 6.8: a file mapped through overlayfs is a backing file whose f_path
 * is the real (lower) file; maps and the module show
 * backing_file.user_path, which BPF cannot reach as a struct path the
 * verifier accepts for bpf_d_path.  Said on a line of its own before the
 * VMA's line; the name is then the real path.
 */
static __always_inline void tk_vma_note(struct seq_file *seq,
					struct vm_area_struct *vma, u64 start)
{
#ifdef FMODE_BACKING
	struct file *file = NULL;
	unsigned int fmode = 0;

	bpf_probe_read_kernel(&file, sizeof(file), &vma->vm_file);
	if (!file)
		return;
	bpf_probe_read_kernel(&fmode, sizeof(fmode), &file->f_mode);
	if (fmode & FMODE_BACKING)
		TK_SEQ(seq, "tk_note backing-file %lx\n", start);
#endif
}

/* The name column of a VMA, as the module (and /proc/PID/maps) names it. */
static __always_inline void tk_vma_name(struct seq_file *seq,
					struct vm_area_struct *vma,
					struct tk_vm_cfg *cfg, u64 start, u64 end)
{
	struct file *file = vma->vm_file;
	struct mm_struct *mm = NULL;
	const void *ops = NULL;
	u64 brk, start_brk, ss;

	if (file) {
		struct tk_vm_scratch *buf;
		u32 key = 0;
		long len;

		buf = tk_vm_buf.lookup(&key);
		if (!buf)
			return;
		/* bpf_d_path: allowed in iterators since 5.12 */
		len = bpf_d_path(&file->f_path, buf->path, sizeof(buf->path));
		if (len < 0)
			TK_SEQ0(seq, "[path-error]\n");
		else
			TK_SEQ(seq, "%s\n", (u64)buf->path);
		return;
	}
	bpf_probe_read_kernel(&ops, sizeof(ops), &vma->vm_ops);
	if (ops && ((u64)ops == cfg->special_vmops ||
		    (u64)ops == cfg->legacy_vmops)) {
		/* special_mapping_name(): the vm_special_mapping's name */
		void *sm = NULL;
		u64 name = 0;

		bpf_probe_read_kernel(&sm, sizeof(sm), &vma->vm_private_data);
		if (sm)
			bpf_probe_read_kernel(&name, sizeof(name), sm);
		if (name) {
			TK_SEQ(seq, "%s\n", name);
			return;
		}
	}
	bpf_probe_read_kernel(&mm, sizeof(mm), &vma->vm_mm);
	if (!mm) {
		TK_SEQ0(seq, "anon\n");
		return;
	}
	brk = TK_MM(mm, brk);
	start_brk = TK_MM(mm, start_brk);
	ss = TK_MM(mm, start_stack);
	if (start <= brk && end >= start_brk)
		TK_SEQ0(seq, "[heap]\n");
	else if (start <= ss && end >= ss)
		TK_SEQ0(seq, "[stack]\n");
	else
		TK_SEQ0(seq, "anon\n");
}

BPF_ITER(task_vma)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	struct tk_vm_cfg *cfg;
	u32 key = 0, tgid = 0, pid = 0;
	u64 start = 0, end = 0, fl = 0, pgoff = 0, mm = 0;
	char perms[5];

	if (!task || !vma)
		return 0;
	cfg = tk_vm_cfg.lookup(&key);
	if (!cfg)
		return 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &task->tgid);
	bpf_probe_read_kernel(&pid, sizeof(pid), &task->pid);
	/* the leader's VMAs only, once (its threads share them), as the
	 * task program shows the leader's mm */
	if (tgid != cfg->pid || pid != tgid)
		return 0;
	bpf_probe_read_kernel(&start, sizeof(start), &vma->vm_start);
	bpf_probe_read_kernel(&end, sizeof(end), &vma->vm_end);
	bpf_probe_read_kernel(&fl, sizeof(fl), &vma->vm_flags);
	bpf_probe_read_kernel(&pgoff, sizeof(pgoff), &vma->vm_pgoff);
	bpf_probe_read_kernel(&mm, sizeof(mm), &vma->vm_mm);
	TK_SEQ(seq, "tk_mm vma %lx\n", mm);
	perms[0] = fl & VM_READ ? 'r' : '-';
	perms[1] = fl & VM_WRITE ? 'w' : '-';
	perms[2] = fl & VM_EXEC ? 'x' : '-';
	perms[3] = fl & VM_MAYSHARE ? 's' : 'p';
	perms[4] = '\0';
	tk_vma_note(seq, vma, start);
	TK_SEQ(seq, "vma %lx %lx %s %lx ", start, end, (u64)perms, pgoff);
	tk_vma_name(seq, vma, cfg, start, end);
	return 0;
}
