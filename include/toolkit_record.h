/* SPDX-License-Identifier: GPL-2.0 */
/*
 * toolkit_record.h - the one definition of a process lifecycle record.
 *
 * Included by the kernel module (lkm/), by the BCC programs (ebpf/) and
 * parsed by Python (toolkit/schema.py), so the backends cannot drift.  Every
 * other agreement between the C sides and Python lives here too: the event
 * types, the drop-counter kinds, the hooks and their kernel symbols, the
 * filter encoding and the eBPF configuration slots.
 *
 * Rules (as in Falco's event table): fields may be appended, never changed
 * or reordered in place; any change to the layout bumps TK_RECORD_VERSION.
 * The list is ordered so that struct tk_record has no padding; a test
 * compiles this header and checks sizeof/offsetof against Python.
 *
 * Only __u64/__u32/__s32/char are used, so the header works with
 * <linux/types.h> in the kernel, in BCC, and in user-space C.
 */
#ifndef TOOLKIT_RECORD_H
#define TOOLKIT_RECORD_H

#define TK_RECORD_VERSION	2
#define TK_COMM_LEN		16

/*
 * Event types: X(NAME, value, "text").  Values are stable.
 *  FORK   a new process (new thread group) became runnable
 *  CLONE  a new thread in an existing thread group (CLONE_THREAD)
 *  EXEC   a successful execve(), recorded after the new comm is set
 *  EXIT   a process exited: the thread group leader's exit, seen while
 *         its mm is still attached, so RSS and peak RSS are real
 *  KILL   (version 2) a process went over one of its quotas and was sent
 *         SIGKILL; quota_kind, quota and quota_value say which, and what
 *         it reached
 */
#define TK_EVENT_TYPES(X)		\
	X(FORK, 1, "fork")		\
	X(CLONE, 2, "clone")		\
	X(EXEC, 3, "exec")		\
	X(EXIT, 4, "exit")		\
	X(KILL, 5, "kill")

/* Values run 1..TK_EVENT_MAX without gaps, so the count is the largest. */
#define TK_PLUS_ONE(name, value, text)	+ 1
#define TK_EVENT_MAX	(0 TK_EVENT_TYPES(TK_PLUS_ONE))

/* Bits of the flags field. */
#define TK_FLAG_HAS_MM		0x1	/* rss/hiwater read from a live mm */

/*
 * Fields, in layout order.
 *  F(type, name, "doc")            a scalar
 *  A(type, name, count, "doc")     a fixed-size array
 */
#define TK_RECORD_FIELDS(F, A)						\
	F(__u64, ts_ns, "event time, CLOCK_MONOTONIC ns")		\
	F(__u64, start_ns, "task start time, CLOCK_MONOTONIC ns; "	\
	  "(pid, start_ns) names a process across PID reuse")		\
	F(__u64, cpu_ns, "exit only: utime+stime of the whole "	\
	  "thread group, ns")						\
	F(__u64, rss_kib, "exit only: resident set size, KiB")	\
	F(__u64, hiwater_rss_kib, "exit only: peak RSS, KiB")	\
	F(__u32, type, "event type, TK_EVENT_TYPES")			\
	F(__u32, pid, "kernel pid (thread id)")			\
	F(__u32, tgid, "thread group id (user-space PID)")		\
	F(__u32, ppid, "tgid of the real parent")			\
	F(__u32, uid, "real uid, initial user namespace")		\
	F(__u32, cpu, "CPU the event was recorded on")			\
	F(__u32, flags, "TK_FLAG_* bits")				\
	F(__s32, exit_code, "exit only: wait(2) status, "		\
	  "(code << 8) | signal")					\
	A(char, comm, TK_COMM_LEN, "task comm, NUL padded")		\
	F(__u64, quota, "kill only (v2): the quota crossed, bytes or "	\
	  "descriptors")						\
	F(__u64, quota_value, "kill only (v2): the value reached")	\
	F(__u32, quota_kind, "kill only (v2): TK_QUOTA_KINDS")		\
	F(__u32, quota_pad, "(v2) zero: keeps the record unpadded")

/*
 * Counter kinds, one counter of each kind per event type, identical on both
 * backends: K(NAME, index, "text").  Every event a hook sees ends in exactly
 * one of filtered, delivered or dropped, so seen == filtered + delivered +
 * dropped.  The module prints them by text in /proc/toolkit/stats; eBPF keeps
 * them in a per-CPU array at TK_COUNTER_KEY(type, kind).
 */
#define TK_COUNTER_KINDS(K)						\
	K(SEEN, 0, "seen")		/* the hook saw an enabled event */	\
	K(FILTERED, 1, "filtered")	/* left out by the uid/parent filter */ \
	K(DELIVERED, 2, "delivered")	/* queued for user space */	\
	K(DROPPED, 3, "dropped")	/* ring full / reservation failed */

#define TK_COUNTER_KEY(type, kind)	((type) * TK_NKINDS + (kind))
#define TK_NCOUNTERS			((TK_EVENT_MAX + 1) * TK_NKINDS)

/*
 * The kernel functions both backends hook (kprobes in the module, kprobes
 * or fentry in eBPF), in the order of enum tk_hook: H(NAME, "symbol",
 * "event").  `toolkit doctor` checks that /proc/kallsyms has each symbol.
 *  FORK  wake_up_new_task(p): a new task made runnable (fork or clone)
 *  EXEC  setup_new_exec(bprm): execve() past the point of no return
 *  EXIT  do_exit(code): the mm is still attached, RSS is real
 */
#define TK_HOOKS(H)						\
	H(FORK, "wake_up_new_task", "fork")			\
	H(EXEC, "setup_new_exec", "exec")			\
	H(EXIT, "do_exit", "exit")

/*
 * Filters (real uid, parent's tgid), as both kernel sides store them in a
 * __u64: TK_FILTER_OFF, or the id + 1, so that a zeroed BPF array entry
 * means off and every u32 id (uid 0 included) can be selected.
 */
#define TK_FILTER_OFF			0ULL
#define TK_FILTER_ENCODE(id)		((__u64)(id) + 1)
#define TK_FILTER_PASSES(filter, id)					\
	((filter) == TK_FILTER_OFF || (filter) == TK_FILTER_ENCODE(id))

/*
 * Slots of the eBPF tk_config array (the module has the same two filters).
 *  UID     real uid filter (TK_FILTER_*)
 *  PPID    parent's tgid filter (TK_FILTER_*)
 *  WAKEUP  the ring buffer's reader wakeup policy: 0 wakes the reader at
 *          each record it is waiting for (the kernel's default); N > 0
 *          submits with BPF_RB_NO_WAKEUP and forces a wakeup at every N-th
 *          record of a CPU, the reader also polling on a timer (batched)
 */
#define TK_CONFIG_SLOTS(C)		\
	C(UID, 0, "uid")		\
	C(PPID, 1, "ppid")		\
	C(WAKEUP, 2, "wakeup")

/*
 * Per-process quotas (version 2): Q(NAME, value, "text").  Values are
 * stable; a kill record's quota_kind is one of them.
 *  HEAP   the mm's private writable memory, mm->data_vm in bytes (what
 *         RLIMIT_DATA limits: brk extent plus private writable mappings)
 *  FILES  open file descriptors (bits set in the fd table's open_fds)
 */
#define TK_QUOTA_KINDS(Q)		\
	Q(HEAP, 1, "heap")		\
	Q(FILES, 2, "files")

/*
 * One row of the process table as the eBPF task iterator (ebpf/procs.c)
 * writes it with bpf_seq_write(): the columns the module prints as text in
 * /proc/toolkit/processes, the same values read the same way (see both
 * files).  Shared here because Python decodes it (toolkit/schema.py,
 * checked by tests/test_schema.py like struct tk_record); fields only
 * appended, TK_PROC_VERSION bumped on any change; ordered to have no
 * padding.
 *  F(type, name, "doc")            a scalar
 *  A(type, name, count, "doc")     a fixed-size array
 */
#define TK_PROC_VERSION		1

/*
 * Bits of a row's flags.
 *  CPU_PARTIAL  more threads than the walk's bound: cpu_ns sums the first
 *               ones only
 */
#define TK_PROC_FLAG_CPU_PARTIAL	0x1

#define TK_PROC_FIELDS(F, A)						\
	F(__u64, start_ns, "leader's start time, CLOCK_MONOTONIC ns")	\
	F(__u64, cpu_ns, "scheduler runtime of the live threads plus "	\
	  "signal->sum_sched_runtime, ns")				\
	F(__u64, rss_kib, "resident set size, KiB (get_mm_rss)")	\
	F(__u64, hiwater_rss_kib, "peak RSS, KiB "			\
	  "(get_mm_hiwater_rss)")					\
	F(__u64, total_vm_kib, "mapped virtual memory, KiB")		\
	F(__u32, pid, "thread group id (user-space PID)")		\
	F(__u32, ppid, "tgid of the real parent")			\
	F(__u32, uid, "real uid, initial user namespace")		\
	F(__u32, threads, "live threads (signal->nr_threads)")		\
	F(__u32, state, "task_state_to_char() of the leader, ASCII")	\
	F(__u32, flags, "TK_PROC_FLAG_* bits")				\
	A(char, comm, TK_COMM_LEN, "leader's comm, NUL padded")

struct tk_proc_row {
#define TK_DECLARE_SCALAR(type, name, doc)		type name;
#define TK_DECLARE_ARRAY(type, name, count, doc)	type name[count];
	TK_PROC_FIELDS(TK_DECLARE_SCALAR, TK_DECLARE_ARRAY)
#undef TK_DECLARE_SCALAR
#undef TK_DECLARE_ARRAY
};

struct tk_record {
#define TK_DECLARE_SCALAR(type, name, doc)		type name;
#define TK_DECLARE_ARRAY(type, name, count, doc)	type name[count];
	TK_RECORD_FIELDS(TK_DECLARE_SCALAR, TK_DECLARE_ARRAY)
#undef TK_DECLARE_SCALAR
#undef TK_DECLARE_ARRAY
};

/* printf conversions for the text form (/proc/toolkit/events). */
#define TK_FMT___u64	"%llu"
#define TK_FMT___u32	"%u"
#define TK_FMT___s32	"%d"

enum tk_event_type {
#define TK_DECLARE_EVENT(name, value, text)	TK_EVENT_##name = value,
	TK_EVENT_TYPES(TK_DECLARE_EVENT)
#undef TK_DECLARE_EVENT
};

enum tk_quota_kind {
#define TK_DECLARE_QUOTA(name, value, text)	TK_QUOTA_##name = value,
	TK_QUOTA_KINDS(TK_DECLARE_QUOTA)
#undef TK_DECLARE_QUOTA
};

enum tk_counter_kind {
#define TK_DECLARE_KIND(name, index, text)	TK_##name = index,
	TK_COUNTER_KINDS(TK_DECLARE_KIND)
#undef TK_DECLARE_KIND
	TK_NKINDS
};

enum tk_hook {
#define TK_DECLARE_HOOK(name, symbol, event)	TK_HOOK_##name,
	TK_HOOKS(TK_DECLARE_HOOK)
#undef TK_DECLARE_HOOK
	TK_HOOK_MAX
};

enum tk_config_slot {
#define TK_DECLARE_SLOT(name, index, text)	TK_CONFIG_##name = index,
	TK_CONFIG_SLOTS(TK_DECLARE_SLOT)
#undef TK_DECLARE_SLOT
	TK_CONFIG_MAX
};

#endif /* TOOLKIT_RECORD_H */
