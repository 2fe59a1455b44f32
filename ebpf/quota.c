/* SPDX-License-Identifier: GPL-2.0 */
/*
 * quota.c - per-process quotas on heap and open files from BCC eBPF: the
 * kprobe hook set of include/toolkit_quota.h, the logic of tk_quota.h
 * (shared with the CO-RE engine's core/quota.bpf.c).  Loaded by
 * toolkit/backends/ebpf_quota.py, which attaches each hook of
 * TK_QUOTA_KPROBES to its entry point (kp_<function>, kr_<syscall>,
 * generated in tk_quota.h); the quotas hold
 * while that process keeps the programs attached (BCC's kprobes are perf
 * events, not pinnable links).
 *
 * This file holds what is BCC's own: the map declarations, their
 * accessors and the entry points.  Compiled with -I<repo>/include
 * -I<repo>/ebpf.
 */
#include <uapi/linux/ptrace.h>
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/mm_types.h>
#include <linux/cred.h>
#include <linux/fdtable.h>

#include "toolkit_record.h"
#include "toolkit_quota.h"
#include "tk_mm.h"
#include "tk_task.h"

BPF_HASH(tk_quotas, u32, struct tk_quota_value, TK_QUOTA_ENTRIES);
BPF_RINGBUF_OUTPUT(tk_kills, 8);
BPF_ARRAY(tk_quota_counts, u64, TK_QCOUNT_MAX);

static __always_inline struct tk_quota_value *tk_quota_lookup(u32 tgid)
{
	return tk_quotas.lookup(&tgid);
}

static __always_inline void tk_quota_delete(u32 tgid)
{
	tk_quotas.delete(&tgid);
}

static __always_inline u64 *tk_qcount_slot(u32 slot)
{
	return tk_quota_counts.lookup(&slot);
}

static __always_inline struct tk_record *tk_kill_reserve(void)
{
	return tk_kills.ringbuf_reserve(sizeof(struct tk_record));
}

static __always_inline void tk_kill_submit(struct tk_record *r)
{
	tk_kills.ringbuf_submit(r, 0);
}

#include "tk_quota.h"	/* the logic and the entry points */
