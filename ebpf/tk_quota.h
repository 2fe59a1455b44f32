/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_quota.h - the quota programs' logic, shared by both eBPF engines:
 * quota.c (BCC) and core/quota.bpf.c (CO-RE).  The behaviour of
 * lkm/quota.c (read it first) with BPF maps:
 *
 *   heap   mm->data_vm in bytes
 *   files  the bits set in the fd table's open_fds (up to TK_FD_WORDS * 64
 *          descriptors)
 *
 * read where include/toolkit_quota.h's hook sets say: at fd_install(), the
 * dup2/dup3 returns and the returns of the syscalls that change data_vm
 * (kprobe set), or at the return of every syscall of a tracked process
 * (tracepoint set).  Over a quota, bpf_send_signal(SIGKILL) signals
 * current's thread group (it takes effect on the return to user space) and
 * a struct tk_record of type TK_EVENT_KILL goes to the kill ring.  The
 * group leader's exit deletes its entry.
 *
 * The map is keyed by tgid; an entry's start_ns is the leader's start
 * time, so a later process with the same pid never matches.  User space
 * may write 0 for a process it holds unreaped (its own child: the pid
 * cannot be reused meanwhile): the first hook that sees the process binds
 * the entry to its start time.  The killed flag is set without an atomic
 * compare-and-swap: two threads crossing at the same instant may both
 * record a kill.
 *
 * The including file declares the maps and provides their accessors (BCC
 * rewrites map method calls only in its main source file):
 *   struct tk_quota_value *tk_quota_lookup(u32 tgid)
 *   void tk_quota_delete(u32 tgid)
 *   u64 *tk_qcount_slot(u32 slot)              TK_QUOTA_COUNTS
 *   struct tk_record *tk_kill_reserve(void)
 *   void tk_kill_submit(struct tk_record *r)
 * after including toolkit_record.h, toolkit_quota.h and tk_task.h.
 */
#ifndef TK_QUOTA_BPF_H
#define TK_QUOTA_BPF_H

#define TK_SIGKILL	9

static __always_inline void tk_qcount(u32 slot)
{
	u64 *val = tk_qcount_slot(slot);

	if (val)
		__sync_fetch_and_add(val, 1);
}

/* current's entry, bound to its leader's start time; NULL if not tracked */
static __always_inline struct tk_quota_value *
tk_quota_current(struct task_struct *t)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tk_quota_value *q = tk_quota_lookup(tgid);
	struct task_struct *leader = NULL;
	u64 start = 0;

	if (!q)
		return NULL;
	bpf_probe_read_kernel(&leader, sizeof(leader), &t->group_leader);
	if (leader)
		bpf_probe_read_kernel(&start, sizeof(start),
				      &leader->start_time);
	if (!q->start_ns)
		q->start_ns = start;
	return q->start_ns == start ? q : NULL;
}

/* open descriptors of t: the bits set in its fd table's open_fds */
static __always_inline u64 tk_open_fds(struct task_struct *t)
{
	struct files_struct *files = NULL;
	struct fdtable *fdt = NULL;
	unsigned long *bits = NULL;
	unsigned int max = 0;
	u64 n = 0;
	int i;

	bpf_probe_read_kernel(&files, sizeof(files), &t->files);
	if (!files)
		return 0;
	bpf_probe_read_kernel(&fdt, sizeof(fdt), &files->fdt);
	if (!fdt)
		return 0;
	bpf_probe_read_kernel(&max, sizeof(max), &fdt->max_fds);
	bpf_probe_read_kernel(&bits, sizeof(bits), &fdt->open_fds);
#pragma unroll
	for (i = 0; i < TK_FD_WORDS; i++) {
		u64 w = 0;

		if ((unsigned int)i * 64 >= max)
			break;
		bpf_probe_read_kernel(&w, sizeof(w), &bits[i]);
		n += __builtin_popcountll(w);
	}
	return n;
}

/* mm->data_vm of t in bytes; 0 without an mm */
static __always_inline u64 tk_heap_bytes(struct task_struct *t)
{
	struct mm_struct *mm = NULL;
	unsigned long pages = 0;

	bpf_probe_read_kernel(&mm, sizeof(mm), &t->mm);
	if (!mm)
		return 0;
	bpf_probe_read_kernel(&pages, sizeof(pages), &mm->data_vm);
	return (u64)pages << TK_PAGE_SHIFT;
}

/* SIGKILL current's process for going over @kind, once; record it */
static __always_inline void tk_kill(struct task_struct *t,
				    struct tk_quota_value *q, u32 kind,
				    u64 quota, u64 value)
{
	struct task_struct *parent = NULL;
	struct tk_record *r;

	if (q->killed)
		return;
	q->killed = kind;
	/*
	 * With interrupts disabled the helper defers the signal to an
	 * irq_work, which runs before the return to user space; it fails
	 * (-EBUSY) if this CPU's irq_work is still pending: then the next
	 * hook of the process tries again.
	 */
	if (bpf_send_signal(TK_SIGKILL)) {
		q->killed = 0;
		tk_qcount(TK_QCOUNT_RETRIES);
		return;
	}
	tk_qcount(TK_QCOUNT_KILLS);
	r = tk_kill_reserve();
	if (!r) {
		tk_qcount(TK_QCOUNT_DROPPED);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->type = TK_EVENT_KILL;
	r->cpu = bpf_get_smp_processor_id();
	r->pid = (u32)bpf_get_current_pid_tgid();
	r->tgid = bpf_get_current_pid_tgid() >> 32;
	r->uid = (u32)bpf_get_current_uid_gid();
	r->start_ns = q->start_ns;
	bpf_probe_read_kernel(&parent, sizeof(parent), &t->real_parent);
	if (parent)
		bpf_probe_read_kernel(&r->ppid, sizeof(r->ppid), &parent->tgid);
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->quota_kind = kind;
	r->quota = quota;
	r->quota_value = value;
	tk_kill_submit(r);
}

/*
 * Over its files quota, current is killed; @rising (the tracepoint set,
 * which checks at every syscall return): only if the count rose since the
 * last check, as the kprobe set checks only where a descriptor is made.
 */
static __always_inline void tk_check_files(struct task_struct *t,
					   struct tk_quota_value *q, int rising)
{
	u64 n, seen = q->files_seen;

	if (q->killed || !q->files_quota)
		return;
	n = tk_open_fds(t);
	if (rising)
		q->files_seen = n;
	if (n > q->files_quota && (!rising || n > seen))
		tk_kill(t, q, TK_QUOTA_FILES, q->files_quota, n);
}

/* the same for the heap quota: mm->data_vm */
static __always_inline void tk_check_heap(struct task_struct *t,
					  struct tk_quota_value *q, int rising)
{
	u64 bytes, seen = q->heap_seen;

	if (q->killed || !q->heap_quota)
		return;
	bytes = tk_heap_bytes(t);
	if (rising)
		q->heap_seen = bytes;
	if (bytes > q->heap_quota && (!rising || bytes > seen))
		tk_kill(t, q, TK_QUOTA_HEAP, q->heap_quota, bytes);
}

/* check current's quota of @kind (a kprobe set hook); 0 for any hook */
static __always_inline int tk_quota_check(u32 kind)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct tk_quota_value *q = tk_quota_current(t);

	if (!q)
		return 0;
	if (kind == TK_QUOTA_FILES)
		tk_check_files(t, q, 0);
	else
		tk_check_heap(t, q, 0);
	return 0;
}

/* a syscall of current returned (tracepoint set): recount both */
static __always_inline int tk_quota_sys_exit(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct tk_quota_value *q = tk_quota_current(t);

	if (!q)
		return 0;
	tk_check_files(t, q, 1);
	tk_check_heap(t, q, 1);
	return 0;
}

/* current is in do_exit(): the group leader's exit deletes its entry */
static __always_inline int tk_quota_exit(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u64 id = bpf_get_current_pid_tgid();
	struct task_struct *exec_task;
	u32 tgid = id >> 32;

	if ((u32)id != tgid || !tk_quota_lookup(tgid))
		return 0;
	exec_task = tk_group_exec_task(t);
	if (exec_task && exec_task != t)
		return 0;	/* de_thread(): the process lives on */
	if (tk_quota_current(t))
		tk_quota_delete(tgid);
	return 0;
}

/*
 * The entry points, one per hook of include/toolkit_quota.h's lists, named
 * as user space attaches them: kp_<function>, kr_<syscall>, rt_<tracepoint>
 * (SEC() names on the CO-RE build; BCC attaches by name).
 */
#ifdef TK_CORE
#define TK_QSEC(name)	SEC(name)
#else
#define TK_QSEC(name)
#endif

/* a syscall of the kprobe set returned @rc: a descriptor only if >= 0 */
static __always_inline int tk_quota_ret(u32 kind, long rc)
{
	if (kind == TK_QUOTA_FILES && rc < 0)
		return 0;
	return tk_quota_check(kind);
}

#define TK_QPRE_FILES()		tk_quota_check(TK_QUOTA_FILES)
#define TK_QPRE_EXIT()		tk_quota_exit()
#define TK_QKPROBE(kind, sym)					\
	TK_QSEC("kprobe/" #sym)					\
	int kp_##sym(struct pt_regs *ctx)			\
	{							\
		return TK_QPRE_##kind();			\
	}
#define TK_QKRETPROBE(kind, sys)				\
	TK_QSEC("kretprobe/__x64_sys_" #sys)			\
	int kr_##sys(struct pt_regs *ctx)			\
	{							\
		return tk_quota_ret(TK_QUOTA_##kind,		\
				    (long)PT_REGS_RC(ctx));	\
	}

TK_QUOTA_KPROBES(TK_QKPROBE, TK_QKRETPROBE)

#ifdef TK_CORE
#define TK_QTP_ALL()		tk_quota_sys_exit()
#define TK_QTP_EXIT()		tk_quota_exit()
#define TK_QTRACEPOINT(kind, tp, doc)				\
	SEC("raw_tp/" #tp)					\
	int rt_##tp(void *ctx)					\
	{							\
		return TK_QTP_##kind();				\
	}

TK_QUOTA_TRACEPOINTS(TK_QTRACEPOINT)
#endif

#endif /* TK_QUOTA_BPF_H */
