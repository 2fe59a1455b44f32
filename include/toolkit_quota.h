/* SPDX-License-Identifier: GPL-2.0 */
/*
 * toolkit_quota.h - what the quota enforcers agree on, written once: the
 * kernel functions they hook, the BPF map value, the BPF counters and the
 * layout version of pinned eBPF quotas.
 *
 * Included by the module (lkm/quota.c: its kprobes and kretprobes), by both
 * eBPF builds (ebpf/tk_quota.h via ebpf/quota.c and ebpf/core/quota.bpf.c)
 * and parsed by Python (toolkit/schema.py: the attach lists of the BCC
 * engine, the map value's ctypes layout, the counter names, what `doctor`
 * and `toolkit quota` say is covered).  A test compiles this header and
 * checks the value's layout against Python.
 *
 * Rules: fields of the map value and counter slots are appended, never
 * changed in place, and any change to either bumps TK_QUOTA_LAYOUT (pinned
 * maps of another layout are refused; see docs/quota.md).
 */
#ifndef TOOLKIT_QUOTA_H
#define TOOLKIT_QUOTA_H

#define TK_QUOTA_LAYOUT		1	/* version of the pinned layout */
#define TK_QUOTA_MAGIC		0x746b71756f7461ULL	/* "tkquota" */
#define TK_QUOTA_ENTRIES	1024	/* tracked processes */
#define TK_FD_WORDS		128	/* eBPF counts 8192 descriptors */

/*
 * The kprobe hook set (the module always, eBPF where the kernel has
 * kprobes).  P(KIND, symbol): a kprobe at the function's entry;
 * R(KIND, syscall): a kretprobe on the x86-64 syscall entry
 * __x64_sys_<syscall> (32-bit compat syscalls are not hooked).  KIND is the
 * quota checked there (TK_QUOTA_KINDS of toolkit_record.h), or EXIT: the
 * group leader's exit drops its entry.
 *  fd_install   every descriptor but dup2/dup3's is reserved in open_fds
 *               and then made visible by fd_install()
 *  dup2, dup3   install through do_dup2(), checked when they return >= 0
 *  brk ...      the syscalls that change mm->data_vm, checked at return
 */
#define TK_QUOTA_KPROBES(P, R)		\
	P(FILES, fd_install)		\
	P(EXIT, do_exit)		\
	R(HEAP, brk)			\
	R(HEAP, mmap)			\
	R(HEAP, munmap)			\
	R(HEAP, mremap)			\
	R(HEAP, mprotect)		\
	R(HEAP, execve)			\
	R(HEAP, execveat)		\
	R(FILES, dup2)			\
	R(FILES, dup3)

/*
 * The tracepoint hook set (eBPF where the kernel has no kprobes), raw
 * tracepoints: T(KIND, tracepoint, "what is checked there").  At the return of every system
 * call of a tracked process both quotas are recounted from the kernel's own
 * state (the open_fds bits, mm->data_vm), so every descriptor and every
 * data_vm change a system call makes is seen as it returns, whichever call
 * made it (32-bit compat calls included).  As the kprobe set kills only in
 * a call that makes a descriptor or changes data_vm, this one kills only
 * where the value rose since the last check (files_seen, heap_seen): a
 * process already over its quota when it is set is killed by its next
 * rise, not by its next read().
 */
#define TK_QUOTA_TRACEPOINTS(T)					\
	T(ALL, sys_exit, "heap and files at every syscall return")	\
	T(EXIT, sched_process_exit, "the group leader's exit")

/* The BPF map value, keyed by tgid: V(type, name, "doc"), layout order. */
#define TK_QUOTA_VALUE_FIELDS(V)					\
	V(__u64, start_ns, "the leader's start_time; 0: bound by the first " \
	  "hook that sees the process")					\
	V(__u64, heap_quota, "bytes of mm->data_vm; 0: none")		\
	V(__u64, files_quota, "open descriptors; 0: none")		\
	V(__u32, killed, "TK_QUOTA_* that killed it; 0: tracking")	\
	V(__u32, pad, "zero")						\
	V(__u64, files_seen, "tracepoint set: descriptors at the last "	\
	  "check (user space writes the count at set)")			\
	V(__u64, heap_seen, "tracepoint set: data_vm bytes at the last "	\
	  "check (user space writes the value at set)")

/* Slots of the eBPF counters array: C(NAME, index, "text"). */
#define TK_QUOTA_COUNTS(C)						\
	C(KILLS, 0, "kills")		/* SIGKILLs sent */		\
	C(DROPPED, 1, "dropped")	/* kill records: ring full */	\
	C(RETRIES, 2, "signal_retries")	/* send failed: next hook */

/*
 * Slots of the pinned layout marker (an array map of __u64 beside the
 * pinned quotas): M(NAME, index, "text").
 *  MAGIC    TK_QUOTA_MAGIC
 *  LAYOUT   TK_QUOTA_LAYOUT of the toolkit that pinned them
 *  VALUE    sizeof(struct tk_quota_value)
 *  HOOKS    1 kprobe set, 2 tracepoint set
 *  MOUNTED  1 if the toolkit mounted bpffs for them (reset unmounts it)
 */
#define TK_QUOTA_MARKS(M)		\
	M(MAGIC, 0, "magic")		\
	M(LAYOUT, 1, "layout")		\
	M(VALUE, 2, "value_size")	\
	M(HOOKS, 3, "hooks")		\
	M(MOUNTED, 4, "mounted")

struct tk_quota_value {
#define TK_DECLARE_QVALUE(type, name, doc)	type name;
	TK_QUOTA_VALUE_FIELDS(TK_DECLARE_QVALUE)
#undef TK_DECLARE_QVALUE
};

enum tk_quota_count {
#define TK_DECLARE_QCOUNT(name, index, text)	TK_QCOUNT_##name = index,
	TK_QUOTA_COUNTS(TK_DECLARE_QCOUNT)
#undef TK_DECLARE_QCOUNT
	TK_QCOUNT_MAX
};

enum tk_quota_mark {
#define TK_DECLARE_QMARK(name, index, text)	TK_QMARK_##name = index,
	TK_QUOTA_MARKS(TK_DECLARE_QMARK)
#undef TK_DECLARE_QMARK
	TK_QMARK_MAX
};

#endif /* TOOLKIT_QUOTA_H */
