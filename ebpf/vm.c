/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm.c - one process's memory layout from BPF iterators, for
 * `toolkit inspect PID --backend ebpf --engine bcc`
 * (toolkit/backends/ebpf_vm.py): BCC's build of tk_vm.h, which holds the
 * logic and the output format, shared with the CO-RE engine's
 * core/vm.bpf.c.  This file holds the maps, their accessors and the entry
 * points.
 *
 * BCC compiles against the running kernel's headers, so kernel differences
 * are compile-time tests (in tk_mm.h and tk_vm.h).  The per-CPU offsets of
 * the RSS counters' deltas are read from __per_cpu_offset[] at its
 * kallsyms address (the kernels BCC runs on in the lab list data symbols).
 */
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/mm.h>
#include <linux/mm_types.h>
#include <linux/fs.h>
#include <linux/path.h>
#include <linux/cred.h>

/* bpf_d_path() takes no backing_file.user_path: such files are noted */
#define TK_VM_USER_PATH	0

#include "tk_mm.h"
#include "tk_task.h"
#include "tk_iter.h"
#include "tk_vm.h"

BPF_ARRAY(tk_vm_cfg, struct tk_vm_cfg, 1);
BPF_PERCPU_ARRAY(tk_vm_buf, struct tk_vm_scratch, 1);

static __always_inline struct tk_vm_cfg *tk_vm_cfg_get(void)
{
	u32 key = 0;

	return tk_vm_cfg.lookup(&key);
}

static __always_inline struct tk_vm_scratch *tk_vm_scratch_get(void)
{
	u32 key = 0;

	return tk_vm_buf.lookup(&key);
}

static __always_inline u32 tk_vm_pcpu_offsets(struct tk_vm_cfg *cfg,
					      u64 *off, u32 n)
{
	u32 cpu;

	if (!cfg->pcpu_offsets)
		return 0;
	for (cpu = 0; cpu < TK_VM_MAX_CPUS; cpu++) {
		if (cpu >= n)
			break;
		off[cpu] = 0;
		if (bpf_probe_read_kernel(&off[cpu], sizeof(off[cpu]),
					  (void *)(cfg->pcpu_offsets +
						   cpu * sizeof(u64))))
			return cpu;
	}
	return cpu;
}

static __always_inline void tk_vm_file_name(struct seq_file *seq,
					    struct file *file,
					    struct tk_vm_cfg *cfg,
					    struct tk_vm_scratch *buf)
{
	/* bpf_d_path: allowed in iterators since 5.12 */
	if (bpf_d_path(&file->f_path, buf->path, sizeof(buf->path)) < 0)
		TK_SEQ0(seq, "[path-error]\n");
	else
		TK_SEQ(seq, "%s\n", (u64)buf->path);
}

BPF_ITER(task)
{
	return tk_vm_task(ctx->meta->seq, ctx->task);
}

BPF_ITER(task_vma)
{
	return tk_vm_vma(ctx->meta->seq, ctx->task, ctx->vma);
}
