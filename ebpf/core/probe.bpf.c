// SPDX-License-Identifier: GPL-2.0
/*
 * probe.bpf.c - one trivial program per attach kind, so that `toolkit
 * doctor` can find which kinds this kernel accepts by loading and attaching
 * each alone (toolkit/doctor.py, core_attach_kinds()).  They do nothing.
 */
#include "tk_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct bpf_iter_meta;
struct bpf_iter__task;

SEC("kprobe/do_exit")
int BPF_KPROBE(probe_kprobe)
{
	return 0;
}

SEC("fentry/do_exit")
int BPF_PROG(probe_fentry)
{
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_tp_btf)
{
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(probe_raw_tp)
{
	return 0;
}

SEC("iter/task")
int probe_iter_task(struct bpf_iter__task *ctx)
{
	return 0;
}
