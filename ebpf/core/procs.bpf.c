// SPDX-License-Identifier: GPL-2.0
/*
 * procs.bpf.c - the CO-RE engine's process table: a BPF task iterator
 * writing one struct tk_proc_row per user-space process, as ebpf/procs.c
 * does for BCC; the row is tk_procs.h's, shared by both.  Loaded and run by
 * toolkit/backends/ebpf_core.py (libbpf's bpf_program__attach_iter and
 * bpf_iter_create); every run is a new walk.
 */
#include "tk_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "toolkit_record.h"
#include "tk_mm.h"
#include "tk_task.h"
#include "tk_iter.h"
#include "tk_procs.h"

char LICENSE[] SEC("license") = "GPL";

SEC("iter/task")
int tk_iter_task(struct bpf_iter__task *ctx)
{
	struct tk_proc_row row;

	if (tk_proc_fill(ctx->task, &row))
		bpf_seq_write(ctx->meta->seq, &row, sizeof(row));
	return 0;
}
