// SPDX-License-Identifier: GPL-2.0
/*
 * vm.bpf.c - `toolkit inspect PID --backend ebpf --engine core`: the CO-RE
 * build of ebpf/tk_vm.h (shared with the BCC engine's ebpf/vm.c), loaded
 * and run by toolkit/backends/ebpf_vm.py through libbpf.  This file holds
 * the maps, their accessors and the two iterator entry points.
 *
 * The per-CPU offsets of the RSS counters' deltas: BCC reads
 * __per_cpu_offset[] at its kallsyms address; a kernel without data
 * symbols in kallsyms (CONFIG_KALLSYMS_ALL=n) has none, and a typed
 * __ksym needs that symbol too.  A per-CPU array map of our own gives the
 * offsets instead: bpf_map_lookup_percpu_elem(map, 0, cpu) returns
 * per_cpu_ptr(pptrs[0], cpu), which is pptrs[0] + __per_cpu_offset[cpu],
 * and pptrs[0] is in the map's own struct bpf_array (read at its CO-RE
 * offset).  Pointers become numbers through a fault-safe read of the stack
 * slot holding them (the verifier allows it to root, which loading BPF
 * needs anyway).
 */
#include "tk_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* tk_vm_file_name() below names a backing file by the user's path */
#define TK_VM_USER_PATH	1

#include "toolkit_record.h"
#include "tk_mm.h"
#include "tk_task.h"
#include "tk_iter.h"
#include "tk_vm.h"

char LICENSE[] SEC("license") = "GPL";

/* struct tk_vm_cfg, written by user space before each walk */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct tk_vm_cfg);
} tk_vm_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct tk_vm_scratch);
} tk_vm_buf SEC(".maps");

/* never written: its per-CPU addresses give __per_cpu_offset[] */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} tk_vm_pcpu SEC(".maps");

static __always_inline struct tk_vm_cfg *tk_vm_cfg_get(void)
{
	u32 key = 0;

	return bpf_map_lookup_elem(&tk_vm_cfg, &key);
}

static __always_inline struct tk_vm_scratch *tk_vm_scratch_get(void)
{
	u32 key = 0;

	return bpf_map_lookup_elem(&tk_vm_buf, &key);
}

/* a pointer's value as a number: read back from the stack slot holding it */
static __always_inline u64 tk_vm_addr(const void *p)
{
	const void *slot = p;
	u64 addr = 0;

	bpf_probe_read_kernel(&addr, sizeof(addr), &slot);
	return addr;
}

static __always_inline u32 tk_vm_pcpu_offsets(struct tk_vm_cfg *cfg,
					      u64 *off, u32 n)
{
	struct bpf_array *arr = (void *)&tk_vm_pcpu;
	u64 base = 0;
	u32 key = 0, cpu;

	if (bpf_probe_read_kernel(&base, sizeof(base),
				  (void *)(tk_vm_addr(arr) +
				  bpf_core_field_offset(struct bpf_array,
							pptrs))) || !base)
		return 0;
	for (cpu = 0; cpu < TK_VM_MAX_CPUS; cpu++) {
		void *p;

		if (cpu >= n)
			break;
		p = bpf_map_lookup_percpu_elem(&tk_vm_pcpu, &key, cpu);
		if (!p)
			return cpu;
		off[cpu] = tk_vm_addr(p) - base;
	}
	return cpu;
}

/*
 * A mapped file's path, d_path()'s way: the walk of prepend_path() (dentry
 * to parent up to the mount's root, then across to the mount point in the
 * parent mount, until the reader's root or a global root), which bpf_d_path
 * would do but cannot here: from 6.x the verifier wants a trusted struct
 * path, and vma->vm_file read in a task_vma iterator is not one.  The
 * names go out leaf first after "tk_rpath:<flags>", each after a '/' (no
 * name holds one); user space reverses them.  Flags: d " (deleted)"
 * follows, as d_path() adds to an unlinked file; s a pseudo file named by
 * simple_dname(): "/<name> (deleted)", the one name whole (shmem's
 * "dev/zero" holds a '/'); a a pseudo file's anon_inode:<name>; u a pseudo
 * file named by a d_dname() other than
 * simple_dname() and anon_inodefs_dname(), which BPF cannot call.  A walk
 * cut at TK_VM_PATH_DEPTH names ends in an empty name ("/" last).
 * Everything is read with bpf_probe_read_kernel (the mmap lock that the
 * iterator holds keeps the file, and so its path, pinned).
 */
#define TK_VM_PATH_DEPTH	48

static __always_inline int tk_vm_dname(struct seq_file *seq,
				       struct dentry *d,
				       struct tk_vm_cfg *cfg)
{
	const struct dentry_operations *op = NULL;
	u64 fn = 0, name = 0;

	bpf_probe_read_kernel(&op, sizeof(op), &d->d_op);
	if (op)
		bpf_probe_read_kernel(&fn, sizeof(fn), &op->d_dname);
	if (!fn)
		return 0;
	bpf_probe_read_kernel(&name, sizeof(name), &d->d_name.name);
	if (fn == cfg->simple_dname)
		TK_SEQ(seq, "tk_rpath:s/%s\n", name);
	else if (fn == cfg->anon_dname)
		TK_SEQ(seq, "tk_rpath:a/%s\n", name);
	else
		TK_SEQ(seq, "tk_rpath:u/%s\n", name);
	return 1;
}

/* the path maps shows (file_user_path()), and the reader's root */
static __always_inline void tk_vm_paths(struct file *file, struct path *path,
					struct path *root)
{
	struct task_struct *me = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = NULL;

	if (tk_vm_backing_file(file)) {
		struct backing_file *bf = (void *)file;

		bpf_probe_read_kernel(path, sizeof(*path), &bf->user_path);
	} else {
		bpf_probe_read_kernel(path, sizeof(*path), &file->f_path);
	}
	bpf_probe_read_kernel(&fs, sizeof(fs), &me->fs);
	if (fs)
		bpf_probe_read_kernel(root, sizeof(*root), &fs->root);
}

static __always_inline void tk_vm_file_name(struct seq_file *seq,
					    struct file *file,
					    struct tk_vm_cfg *cfg,
					    struct tk_vm_scratch *buf)
{
	u64 moff = bpf_core_field_offset(struct mount, mnt);
	struct dentry *d, *parent = NULL, *mnt_root = NULL;
	struct mount *mnt, *up = NULL;
	struct path path = {}, root = {};
	void *pprev = NULL;
	u64 name = 0;
	int i;

	tk_vm_paths(file, &path, &root);
	d = path.dentry;
	if (!d || !path.mnt) {
		TK_SEQ0(seq, "[path-error]\n");
		return;
	}
	if (tk_vm_dname(seq, d, cfg))
		return;
	/* d_unlinked(): unhashed and not a root */
	bpf_probe_read_kernel(&pprev, sizeof(pprev), &d->d_hash.pprev);
	bpf_probe_read_kernel(&parent, sizeof(parent), &d->d_parent);
	if (!pprev && parent != d)
		TK_SEQ0(seq, "tk_rpath:d");
	else
		TK_SEQ0(seq, "tk_rpath:");
	mnt = (struct mount *)((u64)path.mnt - moff);
	for (i = 0; i < TK_VM_PATH_DEPTH; i++) {
		if (d == root.dentry && (u64)mnt + moff == (u64)root.mnt)
			break;
		bpf_probe_read_kernel(&mnt_root, sizeof(mnt_root),
				      &mnt->mnt.mnt_root);
		if (d == mnt_root) {
			bpf_probe_read_kernel(&up, sizeof(up),
					      &mnt->mnt_parent);
			if (!up || up == mnt)
				break;		/* a global root */
			bpf_probe_read_kernel(&d, sizeof(d),
					      &mnt->mnt_mountpoint);
			mnt = up;
			continue;
		}
		bpf_probe_read_kernel(&parent, sizeof(parent), &d->d_parent);
		if (!parent || parent == d)
			break;			/* escaped */
		bpf_probe_read_kernel(&name, sizeof(name), &d->d_name.name);
		TK_SEQ(seq, "/%s", name);
		d = parent;
	}
	if (i == TK_VM_PATH_DEPTH)
		TK_SEQ0(seq, "/");
	TK_SEQ0(seq, "\n");
}

SEC("iter/task")
int tk_vm_iter_task(struct bpf_iter__task *ctx)
{
	return tk_vm_task(ctx->meta->seq, ctx->task);
}

SEC("iter/task_vma")
int tk_vm_iter_vma(struct bpf_iter__task_vma *ctx)
{
	return tk_vm_vma(ctx->meta->seq, ctx->task, ctx->vma);
}
