/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_iter.h - the contexts of the BPF iterators the toolkit runs (procs.c:
 * task; vm.c: task and task_vma), as kernel/bpf/task_iter.c defines them.
 * They are in no header BCC compiles against; the verifier checks accesses
 * to them against the kernel's BTF of the same names, not against these.
 */
#ifndef TK_ITER_H
#define TK_ITER_H

struct bpf_iter_meta {
	struct seq_file *seq;
	u64 session_id;
	u64 seq_num;
};

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

struct bpf_iter__task_vma {		/* 5.12 and later */
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	struct vm_area_struct *vma;
};

#endif /* TK_ITER_H */
