// SPDX-License-Identifier: GPL-2.0
/*
 * quota.bpf.c - the CO-RE engine's quota programs: per-process quotas on
 * heap and open files, enforced by SIGKILL.  The logic and the entry
 * points are ebpf/tk_quota.h's, shared with the BCC engine's ebpf/quota.c;
 * this file holds the map definitions and their accessors.
 *
 * Two hook sets (include/toolkit_quota.h), chosen by user space at load
 * time (it turns autoload off for the other, toolkit/backends/core_quota.py):
 *
 *  kprobe      kp_fd_install, kp_do_exit and kr_<syscall> kretprobes: the
 *              module's hooks, where the kernel has kprobes
 *  tracepoint  rt_sys_exit (raw_syscalls:sys_exit, every syscall return of
 *              a tracked process recounts both quotas) and
 *              rt_sched_process_exit, where it has not
 *
 * The maps are pinned by `toolkit quota set --backend ebpf` (the quotas
 * then outlive the command); tk_quota_marks is the pinned layout's marker,
 * written by user space and never read here.
 */
#include "tk_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "toolkit_record.h"
#include "toolkit_quota.h"
#include "tk_mm.h"
#include "tk_task.h"

char LICENSE[] SEC("license") = "GPL";

/* the quotas, keyed by tgid */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TK_QUOTA_ENTRIES);
	__type(key, u32);
	__type(value, struct tk_quota_value);
} tk_quotas SEC(".maps");

/* kill records (struct tk_record, type kill) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 4096);
} tk_kills SEC(".maps");

/* TK_QUOTA_COUNTS */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TK_QCOUNT_MAX);
	__type(key, u32);
	__type(value, u64);
} tk_quota_counts SEC(".maps");

/* TK_QUOTA_MARKS: the pinned layout's marker */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TK_QMARK_MAX);
	__type(key, u32);
	__type(value, u64);
} tk_quota_marks SEC(".maps");

static __always_inline struct tk_quota_value *tk_quota_lookup(u32 tgid)
{
	return bpf_map_lookup_elem(&tk_quotas, &tgid);
}

static __always_inline void tk_quota_delete(u32 tgid)
{
	bpf_map_delete_elem(&tk_quotas, &tgid);
}

static __always_inline u64 *tk_qcount_slot(u32 slot)
{
	return bpf_map_lookup_elem(&tk_quota_counts, &slot);
}

static __always_inline struct tk_record *tk_kill_reserve(void)
{
	return bpf_ringbuf_reserve(&tk_kills, sizeof(struct tk_record), 0);
}

static __always_inline void tk_kill_submit(struct tk_record *r)
{
	bpf_ringbuf_submit(r, 0);
}

#include "tk_quota.h"	/* the logic and the entry points */
