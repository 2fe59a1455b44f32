/* SPDX-License-Identifier: GPL-2.0 */
/*
 * quota.h - what quota.c (the table and the hooks) shares with quota_proc.c
 * (the /proc file).
 */
#ifndef TK_QUOTA_H
#define TK_QUOTA_H

#include <linux/atomic.h>
#include <linux/fdtable.h>
#include <linux/hashtable.h>
#include <linux/mm_types.h>
#include <linux/spinlock.h>

#include "toolkit_lkm.h"
#include "toolkit_quota.h"

#define TK_QUOTA_MAX		TK_QUOTA_ENTRIES	/* tracked processes */
#define TK_QUOTA_BITS		6	/* 64 hash buckets */

struct tk_quota {
	struct hlist_node node;
	struct rcu_head rcu;
	pid_t tgid;
	u64 start_ns;		/* group leader's start_time */
	u64 heap_quota;		/* bytes; 0: none */
	u64 files_quota;	/* descriptors; 0: none */
	u32 killed;		/* TK_QUOTA_* that killed it; 0: tracking */
};

extern struct hlist_head tk_quota_table[1 << TK_QUOTA_BITS];
extern spinlock_t tk_quota_lock;	/* writers of the table */
extern atomic_t tk_quota_count;

struct tk_quota *tk_quota_find(pid_t tgid, u64 start_ns);
void tk_quota_remove(struct tk_quota *q);
u64 tk_open_fds(struct files_struct *files);
u64 tk_heap_bytes(struct mm_struct *mm);
unsigned long tk_quota_missed(void);

#endif /* TK_QUOTA_H */
