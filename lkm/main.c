// SPDX-License-Identifier: GPL-2.0
/*
 * toolkit_lkm - process lifecycle records (fork, clone, exec, exit with
 * RSS) from kprobes, delivered through /proc/toolkit.
 *
 * Init order: ring, /proc/toolkit, then the kprobes LAST, so no handler
 * runs before its data exists.  Exit order: kprobes FIRST (unregister
 * waits for running handlers), then readers are woken and the proc
 * entries removed (proc_remove waits for file operations in flight),
 * then pollers are drained and the ring is freed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/sched.h>

#include "toolkit_lkm.h"

unsigned int tk_ring_size = 16384;
module_param_named(ring_size, tk_ring_size, uint, 0444);
MODULE_PARM_DESC(ring_size,
		 "ring capacity in records, 16..1048576 (default 16384)");

int tk_proc_gid = -1;
module_param_named(proc_gid, tk_proc_gid, int, 0444);
MODULE_PARM_DESC(proc_gid,
		 "group allowed to read /proc/toolkit (default -1: root only)");

static int __init tk_init(void)
{
	int ret;

	BUILD_BUG_ON(TK_COMM_LEN != TASK_COMM_LEN);

	if (tk_ring_size < TK_RING_MIN || tk_ring_size > TK_RING_MAX) {
		pr_err("ring_size %u is out of range %u..%u\n",
		       tk_ring_size, TK_RING_MIN, TK_RING_MAX);
		return -EINVAL;
	}
	if (tk_proc_gid < -1) {
		pr_err("proc_gid %d is invalid\n", tk_proc_gid);
		return -EINVAL;
	}

	/* each step logs its own failure, once, where it happens */
	ret = tk_ring_init(tk_ring_size);
	if (ret)
		return ret;
	ret = tk_procfs_create();
	if (ret)
		goto free_ring;
	ret = tk_probes_register();
	if (ret)
		goto remove_procfs;
	ret = tk_quota_register();
	if (ret)
		goto unregister_probes;
	pr_info("loaded: ring_size=%u proc_gid=%d record_version=%d\n",
		tk_ring_size, tk_proc_gid, TK_RECORD_VERSION);
	return 0;

unregister_probes:
	tk_probes_unregister();
remove_procfs:
	tk_ring_shutdown();
	tk_procfs_remove();
	tk_quota_free();
	tk_ring_wait_pollers();
free_ring:
	tk_ring_free();
	return ret;
}

static void __exit tk_exit(void)
{
	tk_quota_unregister();
	tk_probes_unregister();
	tk_ring_shutdown();
	tk_procfs_remove();
	tk_quota_free();
	tk_ring_wait_pollers();
	tk_ring_free();
	pr_info("unloaded\n");
}

module_init(tk_init);
module_exit(tk_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("toolkit developers");
MODULE_DESCRIPTION("Process lifecycle records from kprobes via /proc/toolkit");
