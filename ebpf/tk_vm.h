/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_vm.h - `toolkit inspect`'s BPF logic, shared by both eBPF engines:
 * vm.c (BCC, compiled at run time against the kernel's headers) and
 * core/vm.bpf.c (CO-RE, compiled once by clang, relocated by libbpf with
 * the kernel's BTF).  The eBPF counterpart of the module's /proc/toolkit/vm
 * (lkm/vm.c): two iterator programs print the module's text format.
 *
 *  tk_vm_task()  (iter/task, >= 5.8) the selected process's leader: pid,
 *                comm, the mm's regions and counters, and the present
 *                entries of the top-level page table
 *  tk_vm_vma()   (iter/task_vma, >= 5.12) every VMA of that process, named
 *                as /proc/PID/maps names it
 *
 * User space writes struct tk_vm_cfg before each walk and restricts the
 * walks to the process through the iterator's link info (6.1+); the
 * programs filter by tgid as well, since older kernels ignore that field.
 *
 * Output: line for line the module's format, so one parser
 * (toolkit/inspect/layout.py) reads both backends.  The BPF side's own
 * lines (user space turns or strips them, toolkit/backends/ebpf_vm.py):
 *   tk_gone <why>            no layout: kthread, or nomm (exiting)
 *   tk_mm <side> <address>   the mm the task walk read, and each VMA's
 *                            vm_mm (all must agree)
 *   tk_geom <pgdir_shift> <physical_mask> <task_size> <reader task_size>
 *                            the first two from kallsyms, 0 where it has
 *                            no data symbols; user space then derives the
 *                            paging depth from TASK_SIZE (mm->task_size:
 *                            2^47 - 4 KiB with 4 levels, 2^56 - 4 KiB
 *                            with 5), and says so
 *   tk_geom_cpus <summed> <nr_cpu_ids>   (per-CPU RSS counters, >= 6.2)
 *                            CPUs whose deltas were added
 *   tk_pgd <index> <raw>     a present top-level entry, raw; user space
 *                            derives the module's "pgd" line (formatting
 *                            ten flags per entry here would multiply the
 *                            verifier's work by the 512 iterations)
 *   tk_note <what> ...       something read differently from the module
 * A newline in a mapped file's path is not escaped here (the module prints
 * \012); user space finds the broken line and escapes it.
 *
 * What BPF cannot do as the module does: pin the mm (get_task_mm) or hold
 * the mmap lock around both walks.  The task walk reads the mm with
 * bpf_probe_read_kernel (fault-safe); the task_vma walk holds the mmap read
 * lock itself, per batch of VMAs.  User space checks that both walks saw
 * the same mm and as many VMAs as map_count.
 *
 * The including file declares the maps and defines the accessors declared
 * below (the only engine-specific part, as for tk_lifecycle.h); include
 * tk_mm.h, tk_task.h and tk_iter.h first.
 */
#ifndef TK_VM_H
#define TK_VM_H

/*
 * What user space tells the programs: the pid, the CPU count, and the
 * addresses (from /proc/kallsyms, 0 when absent) of what the module reaches
 * through macros BPF cannot expand.  BCC sets it by field name through its
 * generated type, the CO-RE engine through a ctypes type that
 * toolkit/backends/ebpf_vm.py builds from this definition: every field a
 * u64, no slot numbers shared with Python.
 */
struct tk_vm_cfg {
	u64 pid;		/* tgid to show */
	u64 nr_cpu_ids;		/* possible CPUs */
	u64 special_name;	/* &special_mapping_name() (a text symbol) */
	u64 pgdir_shift;	/* &pgdir_shift (CONFIG_X86_5LEVEL; data) */
	u64 physical_mask;	/* &physical_mask (data) */
	u64 pcpu_offsets;	/* __per_cpu_offset[] (data; BCC only) */
	u64 simple_dname;	/* &simple_dname() (CO-RE's path walk) */
	u64 anon_dname;		/* &anon_inodefs_dname() (CO-RE's path walk) */
};

#define TK_PGD_ENTRIES	512
#define TK_PATH_MAX	4096
/* the most CPUs whose RSS deltas are added: a loop the verifier can walk */
#define TK_VM_MAX_CPUS	64

/* x86 bits, stable ABI; named apart from the kernel headers BCC includes */
#define TK_PTE_PRESENT	0x1ULL
#define TK_VM_READ	0x1UL
#define TK_VM_WRITE	0x2UL
#define TK_VM_EXEC	0x4UL
#define TK_VM_MAYSHARE	0x80UL

/* Room too big for the 512-byte BPF stack: the top-level table, a path. */
struct tk_vm_scratch {
	u64 pgd[TK_PGD_ENTRIES];
	char path[TK_PATH_MAX];
};

/* provided by the including file */
static __always_inline struct tk_vm_cfg *tk_vm_cfg_get(void);
static __always_inline struct tk_vm_scratch *tk_vm_scratch_get(void);
/* *off = __per_cpu_offset[cpu]; 0 if it cannot be found */
static __always_inline int tk_vm_pcpu_offset(struct tk_vm_cfg *cfg, u32 cpu,
					     u64 *off);
/*
 * The rest of a vma line for a mapped file: its path and "\n".  The
 * including file defines TK_VM_USER_PATH 1 if that is the path the user
 * opened even for an overlayfs backing file (else the backing file is
 * noted, and named by its real path).
 */
static __always_inline void tk_vm_file_name(struct seq_file *seq,
					    struct file *file,
					    struct tk_vm_cfg *cfg,
					    struct tk_vm_scratch *buf);

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

/* A field of a kernel struct, 0 where it cannot be read. */
#define TK_RD(ptr, field)						\
	({								\
		typeof((ptr)->field) _v = 0;				\
		bpf_probe_read_kernel(&_v, sizeof(_v), &(ptr)->field);	\
		_v;							\
	})

static __always_inline u64 tk_vm_read_u64(u64 addr, u64 dflt)
{
	u64 val = dflt;

	if (addr && bpf_probe_read_kernel(&val, sizeof(val), (void *)addr))
		val = dflt;
	return val;
}

static __always_inline u32 tk_vm_read_u32(u64 addr, u32 dflt)
{
	u32 val = dflt;

	if (addr && bpf_probe_read_kernel(&val, sizeof(val), (void *)addr))
		val = dflt;
	return val;
}

static __always_inline void tk_vm_regions(struct seq_file *seq,
					  struct mm_struct *mm)
{
	u64 ss = TK_RD(mm, start_stack);

	TK_SEQ(seq, "region code %lx %lx\nregion data %lx %lx\n",
	       TK_RD(mm, start_code), TK_RD(mm, end_code),
	       TK_RD(mm, start_data), TK_RD(mm, end_data));
	TK_SEQ(seq, "region heap %lx %lx\nregion stack %lx %lx\n",
	       TK_RD(mm, start_brk), TK_RD(mm, brk), ss, ss);
	TK_SEQ(seq, "region args %lx %lx\nregion env %lx %lx\n",
	       TK_RD(mm, arg_start), TK_RD(mm, arg_end),
	       TK_RD(mm, env_start), TK_RD(mm, env_end));
}

/*
 * The RSS counters as /proc/PID/status shows them (and the module's
 * tk_rss()): on >= 6.2 each percpu_counter's folded value plus every CPU's
 * delta, as percpu_counter_sum_positive() does; a CPU's delta is at the
 * counter's per-CPU address plus __per_cpu_offset[cpu].  Offline CPUs hold
 * 0 (their deltas are folded when they go down), so adding every possible
 * CPU is the same sum.  On <= 6.1 the plain read is the sum.  One pass
 * over the CPUs for the three counters, nothing indexed by the CPU (so the
 * verifier need not track it exactly: 6.1's explores such a loop to its
 * bound).  Returns how many CPUs were added, -1 without per-CPU parts.
 */
static __always_inline int tk_vm_rss(struct mm_struct *mm,
				     struct tk_vm_cfg *cfg, long cnt[3])
{
	u64 pf = 0, pa = 0, ps = 0, off;
	u32 ncpus = cfg->nr_cpu_ids, cpu;
	s32 d;

	cnt[0] = tk_mm_counter_raw(mm, MM_FILEPAGES, &pf);
	cnt[1] = tk_mm_counter_raw(mm, MM_ANONPAGES, &pa);
	cnt[2] = tk_mm_counter_raw(mm, MM_SHMEMPAGES, &ps);
	if (!pf || !pa || !ps)
		return -1;
	for (cpu = 0; cpu < TK_VM_MAX_CPUS; cpu++) {
		/*
		 * ncpus opaque to clang: else it folds both bounds into one
		 * "cpu * 8 != min(ncpus, 64) * 8" exit test, which the
		 * verifier cannot bound (6.12: "The sequence of 8193 jumps
		 * is too complex"); the constant bound then stays its own.
		 */
		asm volatile("" : "+r"(ncpus));
		if (cpu >= ncpus || !tk_vm_pcpu_offset(cfg, cpu, &off))
			break;
		d = 0;
		bpf_probe_read_kernel(&d, sizeof(d), (void *)(pf + off));
		cnt[0] += d;
		d = 0;
		bpf_probe_read_kernel(&d, sizeof(d), (void *)(pa + off));
		cnt[1] += d;
		d = 0;
		bpf_probe_read_kernel(&d, sizeof(d), (void *)(ps + off));
		cnt[2] += d;
	}
	return cpu;
}

static __always_inline void tk_vm_counters(struct seq_file *seq,
					   struct mm_struct *mm,
					   struct tk_vm_cfg *cfg)
{
	long cnt[3];
	int summed = tk_vm_rss(mm, cfg, cnt);
	long file = cnt[0] < 0 ? 0 : cnt[0];
	long anon = cnt[1] < 0 ? 0 : cnt[1];
	long shmem = cnt[2] < 0 ? 0 : cnt[2];
	unsigned long hiwater = TK_RD(mm, hiwater_rss);

	/* get_mm_hiwater_rss(): the peak is only stored on an RSS drop */
	if (hiwater < (unsigned long)(anon + file + shmem))
		hiwater = anon + file + shmem;
	TK_SEQ(seq, "counter rss_anon %lu\ncounter rss_file %lu\n"
	       "counter rss_shmem %lu\ncounter hiwater_rss %lu\n",
	       anon, file, shmem, hiwater);
	TK_SEQ(seq, "counter total_vm %lu\ncounter locked_vm %lu\n"
	       "counter data_vm %lu\ncounter exec_vm %lu\n",
	       TK_RD(mm, total_vm), TK_RD(mm, locked_vm),
	       TK_RD(mm, data_vm), TK_RD(mm, exec_vm));
	TK_SEQ(seq, "counter stack_vm %lu\ncounter map_count %d\n",
	       TK_RD(mm, stack_vm), TK_RD(mm, map_count));
	if (summed >= 0)
		TK_SEQ(seq, "tk_geom_cpus %u %u\n", summed, cfg->nr_cpu_ids);
}

/* TASK_SIZE of the process reading the iterator (the toolkit itself, a
 * 64-bit process): what the paging depth is derived from */
static __always_inline u64 tk_vm_reader_task_size(void)
{
	struct task_struct *me = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = NULL;

	bpf_probe_read_kernel(&mm, sizeof(mm), &me->mm);
	return mm ? TK_RD(mm, task_size) : 0;
}

/*
 * The top-level table: one read of its 4 KiB page (mm->pgd is in the
 * kernel's direct map) into the scratch buffer, then every present entry.
 * mm->pgd is the kernel's copy, as the module reads it; with page-table
 * isolation the user copy is the next page, which neither side shows.
 */
static __always_inline void tk_vm_pgd(struct seq_file *seq,
				      struct mm_struct *mm,
				      struct tk_vm_cfg *cfg,
				      struct tk_vm_scratch *buf)
{
	u64 pgdp = (u64)TK_RD(mm, pgd);
	u32 i;

	TK_SEQ(seq, "tk_geom %u %lx %lx %lx\n",
	       tk_vm_read_u32(cfg->pgdir_shift, 0),
	       tk_vm_read_u64(cfg->physical_mask, 0),
	       TK_RD(mm, task_size), tk_vm_reader_task_size());
	if (!pgdp || bpf_probe_read_kernel(buf->pgd, sizeof(buf->pgd),
					   (void *)pgdp)) {
		TK_SEQ(seq, "tk_note pgd-unreadable %lx\n", pgdp);
		return;
	}
	for (i = 0; i < TK_PGD_ENTRIES; i++) {
		u64 e = buf->pgd[i];

		if (e & TK_PTE_PRESENT)
			TK_SEQ(seq, "tk_pgd %u %lx\n", i, e);
	}
}

/* The task iterator's body: @task is the walk's current task or NULL. */
static __always_inline int tk_vm_task(struct seq_file *seq,
				      struct task_struct *task)
{
	struct mm_struct *mm = NULL;
	struct tk_vm_scratch *buf;
	struct tk_vm_cfg *cfg;
	u32 tgid = 0, pid = 0;

	if (!task)
		return 0;
	cfg = tk_vm_cfg_get();
	buf = tk_vm_scratch_get();
	if (!cfg || !buf)
		return 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &task->tgid);
	bpf_probe_read_kernel(&pid, sizeof(pid), &task->pid);
	if (tgid != cfg->pid || pid != tgid)
		return 0;
	if (tk_is_kthread(task)) {
		TK_SEQ0(seq, "tk_gone kthread\n");
		return 0;
	}
	bpf_probe_read_kernel(&mm, sizeof(mm), &task->mm);
	if (!mm) {
		TK_SEQ0(seq, "tk_gone nomm\n");
		return 0;
	}
	TK_SEQ(seq, "pid %d %d\ncomm %s\npage_size %lu\n", tgid, pid,
	       (u64)&task->comm[0], 1UL << TK_PAGE_SHIFT);
	TK_SEQ(seq, "tk_mm task %lx\n", (u64)mm);
	tk_vm_regions(seq, mm);
	tk_vm_counters(seq, mm, cfg);
	tk_vm_pgd(seq, mm, cfg, buf);
	return 0;
}

/*
 * >= 6.8: a file mapped through overlayfs is a backing file whose f_path
 * is the real (lower) file; maps and the module show
 * backing_file.user_path, which is no struct path the verifier lets
 * bpf_d_path take (BCC then notes it), but which CO-RE's own path walk
 * reads.  BCC has FMODE_BACKING from the headers.  CO-RE cannot
 * read a #define, and this one moved (bit 25 in 6.8-6.13, bit 24 from
 * 6.14); alloc_empty_backing_file() sets FMODE_NOACCOUNT (bit 29 on every
 * kernel with backing files) with it, so a backing file is one with bit 29
 * and bit 24 or 25, on a kernel whose BTF has struct backing_file.
 */
static __always_inline int tk_vm_backing_file(struct file *file)
{
	unsigned int fmode = 0;

#ifdef TK_CORE
	if (!bpf_core_type_exists(struct backing_file))
		return 0;
	bpf_probe_read_kernel(&fmode, sizeof(fmode), &file->f_mode);
	return (fmode & (1U << 29)) && (fmode & ((1U << 24) | (1U << 25)));
#elif defined(FMODE_BACKING)
	bpf_probe_read_kernel(&fmode, sizeof(fmode), &file->f_mode);
	return !!(fmode & (__force unsigned int)FMODE_BACKING);
#else
	return 0;
#endif
}

/*
 * The name column of a VMA as /proc/PID/maps names it (get_vma_name()):
 * the file's path; else what vm_ops->name() returns, which for a special
 * mapping ([vdso], [vvar], [vvar_vclock], [uprobes]) is
 * special_mapping_name(): the vm_special_mapping's name (vm_private_data);
 * else [heap], [stack] by the module's rules; else anon.  A vm_ops->name()
 * other than special_mapping_name() cannot be called from BPF: said.
 */
static __always_inline void tk_vm_name(struct seq_file *seq,
				       struct vm_area_struct *vma,
				       struct tk_vm_cfg *cfg, u64 start,
				       u64 end)
{
	struct file *file = vma->vm_file;
	const struct vm_operations_struct *ops = NULL;
	struct mm_struct *mm = NULL;
	u64 namefn = 0;

	if (file) {
		struct tk_vm_scratch *buf = tk_vm_scratch_get();

		if (buf)
			tk_vm_file_name(seq, file, cfg, buf);
		return;
	}
	bpf_probe_read_kernel(&ops, sizeof(ops), &vma->vm_ops);
	if (ops)
		bpf_probe_read_kernel(&namefn, sizeof(namefn), &ops->name);
	if (namefn && namefn == cfg->special_name) {
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
	if (mm && start <= TK_RD(mm, brk) && end >= TK_RD(mm, start_brk)) {
		TK_SEQ0(seq, "[heap]\n");
	} else if (mm && start <= TK_RD(mm, start_stack) &&
		   end >= TK_RD(mm, start_stack)) {
		TK_SEQ0(seq, "[stack]\n");
	} else {
		TK_SEQ0(seq, "anon\n");
	}
}

/* The task_vma iterator's body: the leader's VMAs only, once (its threads
 * share them), as the task program shows the leader's mm. */
static __always_inline int tk_vm_vma(struct seq_file *seq,
				     struct task_struct *task,
				     struct vm_area_struct *vma)
{
	struct tk_vm_cfg *cfg;
	u32 tgid = 0, pid = 0;
	u64 start = 0, end = 0, fl = 0, pgoff = 0, mm = 0, namefn = 0;
	const struct vm_operations_struct *ops = NULL;
	struct file *file;
	char perms[5];

	if (!task || !vma)
		return 0;
	cfg = tk_vm_cfg_get();
	if (!cfg)
		return 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &task->tgid);
	bpf_probe_read_kernel(&pid, sizeof(pid), &task->pid);
	if (tgid != cfg->pid || pid != tgid)
		return 0;
	/* u64 copies: vm_flags is const in the kernel's type from 6.3 */
	bpf_probe_read_kernel(&start, sizeof(start), &vma->vm_start);
	bpf_probe_read_kernel(&end, sizeof(end), &vma->vm_end);
	bpf_probe_read_kernel(&fl, sizeof(fl), &vma->vm_flags);
	bpf_probe_read_kernel(&pgoff, sizeof(pgoff), &vma->vm_pgoff);
	bpf_probe_read_kernel(&mm, sizeof(mm), &vma->vm_mm);
	TK_SEQ(seq, "tk_mm vma %lx\n", mm);
	perms[0] = fl & TK_VM_READ ? 'r' : '-';
	perms[1] = fl & TK_VM_WRITE ? 'w' : '-';
	perms[2] = fl & TK_VM_EXEC ? 'x' : '-';
	perms[3] = fl & TK_VM_MAYSHARE ? 's' : 'p';
	perms[4] = '\0';
	file = vma->vm_file;
	if (file && !TK_VM_USER_PATH && tk_vm_backing_file(file))
		TK_SEQ(seq, "tk_note backing-file %lx\n", start);
	bpf_probe_read_kernel(&ops, sizeof(ops), &vma->vm_ops);
	if (!file && ops)
		bpf_probe_read_kernel(&namefn, sizeof(namefn), &ops->name);
	if (namefn && namefn != cfg->special_name)
		TK_SEQ(seq, "tk_note ops-name %lx\n", start);
	TK_SEQ(seq, "vma %lx %lx %s %lx ", start, end, (u64)perms, pgoff);
	tk_vm_name(seq, vma, cfg, start, end);
	return 0;
}

#endif /* TK_VM_H */
