// SPDX-License-Identifier: GPL-2.0
/*
 * lifecycle.bpf.c - the CO-RE engine's process lifecycle programs: one
 * object, compiled once by clang (ebpf/core/Makefile), that libbpf
 * relocates with the running kernel's BTF and loads from Python
 * (toolkit/backends/ebpf_core.py, toolkit/backends/libbpf.py).  Neither
 * kernel headers nor a compiler are needed where it runs.
 *
 * The logic is ebpf/tk_lifecycle.h's, shared with the BCC engine's
 * ebpf/lifecycle.c; this file holds the map definitions, their accessors
 * and the entry points of every attach kind.  User space turns autoload
 * off for all but the programs of the variant it attaches:
 *
 *  kprobe   wake_up_new_task, setup_new_exec, do_exit: the module's hooks
 *  fentry   BPF trampolines on the same three functions
 *  tp_btf   sched_process_fork/exec/exit as BTF-typed tracepoints
 *  raw_tp   the same tracepoints as raw tracepoints
 *
 * sched_process_exit fires before exit_mm() only on newer kernels (it took
 * a group_dead argument then; 6.18 has it, Debian's 6.1 does not): there
 * the tracepoint sees RSS; elsewhere user space pairs tp_btf/raw_tp fork
 * and exec with the do_exit kprobe, as the BCC tracepoint variant does.
 */
#include "tk_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "toolkit_record.h"
#include "tk_mm.h"
#include "tk_task.h"

char LICENSE[] SEC("license") = "GPL";

/* TK_COUNTER_KINDS per event type, at TK_COUNTER_KEY(type, kind) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_NCOUNTERS);
	__type(key, u32);
	__type(value, u64);
} tk_counters SEC(".maps");

/* TK_CONFIG_SLOTS: filters and the wakeup policy, written by user space */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TK_CONFIG_MAX);
	__type(key, u32);
	__type(value, u64);
} tk_config SEC(".maps");

/* each CPU's records since its last forced wakeup (TK_CONFIG_WAKEUP) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} tk_wakeup SEC(".maps");

/* the records; user space sets the size (a power of two of pages) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 4096);
} tk_events SEC(".maps");

#define TK_TRANSPORT_RINGBUF 1

static __always_inline u64 *tk_counter_slot(u32 key)
{
	return bpf_map_lookup_elem(&tk_counters, &key);
}

static __always_inline u64 *tk_config_slot(u32 slot)
{
	return bpf_map_lookup_elem(&tk_config, &slot);
}

static __always_inline u64 *tk_wakeup_slot(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&tk_wakeup, &zero);
}

static __always_inline struct tk_record *tk_ring_reserve(void)
{
	return bpf_ringbuf_reserve(&tk_events, sizeof(struct tk_record), 0);
}

static __always_inline void tk_ring_submit(struct tk_record *r, u64 flags)
{
	bpf_ringbuf_submit(r, flags);
}

#include "tk_lifecycle.h"

/* the exit code of a task in do_exit(), set before the tracepoint fires */
static __always_inline long tk_exit_code(struct task_struct *p)
{
	int code = 0;

	bpf_probe_read_kernel(&code, sizeof(code), &p->exit_code);
	return code;
}

/* ---- kprobe: the module's functions ---- */

/* runs when a new task is made runnable for the first time */
SEC("kprobe/wake_up_new_task")
int BPF_KPROBE(kp_wake_up_new_task, struct task_struct *p)
{
	return tk_on_fork(ctx, p);
}

/* runs in the binfmt loader after begin_new_exec() set the new comm */
SEC("kprobe/setup_new_exec")
int BPF_KPROBE(kp_setup_new_exec)
{
	return tk_on_exec(ctx);
}

/* runs at do_exit() entry: the mm is still attached */
SEC("kprobe/do_exit")
int BPF_KPROBE(kp_do_exit, long code)
{
	return tk_on_exit(ctx, code);
}

/* ---- fentry: trampolines on the same functions ---- */

SEC("fentry/wake_up_new_task")
int BPF_PROG(fe_wake_up_new_task, struct task_struct *p)
{
	return tk_on_fork(ctx, p);
}

SEC("fentry/setup_new_exec")
int BPF_PROG(fe_setup_new_exec)
{
	return tk_on_exec(ctx);
}

SEC("fentry/do_exit")
int BPF_PROG(fe_do_exit, long code)
{
	return tk_on_exit(ctx, code);
}

/* ---- tp_btf: the sched tracepoints, BTF-typed ---- */

/* in kernel_clone() just before wake_up_new_task(child) */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tb_sched_process_fork, struct task_struct *parent,
	     struct task_struct *child)
{
	return tk_on_fork(ctx, child);
}

/* after a successful load, p == current, comm set */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(tb_sched_process_exec, struct task_struct *p)
{
	return tk_on_exec(ctx);
}

/* in do_exit(); before exit_mm() on kernels whose tracepoint has group_dead */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(tb_sched_process_exit, struct task_struct *p)
{
	return tk_on_exit(ctx, tk_exit_code(p));
}

/* ---- raw_tp: the same tracepoints, raw arguments ---- */

SEC("raw_tp/sched_process_fork")
int BPF_PROG(rt_sched_process_fork, struct task_struct *parent,
	     struct task_struct *child)
{
	return tk_on_fork(ctx, child);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(rt_sched_process_exec, struct task_struct *p)
{
	return tk_on_exec(ctx);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(rt_sched_process_exit, struct task_struct *p)
{
	return tk_on_exit(ctx, tk_exit_code(p));
}
