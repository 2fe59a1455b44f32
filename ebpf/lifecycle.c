/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lifecycle.c - process lifecycle records (fork / clone / exec / exit with
 * RSS) from BCC eBPF programs.  One compile holds the programs of every probe
 * variant; user space (toolkit/backends/ebpf.py) loads and attaches only
 * those of the variant asked for:
 *
 *  kprobe      (default) the kernel functions the module (lkm/) probes:
 *              wake_up_new_task, setup_new_exec, do_exit.  Same hooks as the
 *              module, so the two backends measure the same thing and differ
 *              only in how the handler runs; kprobes also work on any kernel
 *              with CONFIG_KPROBES, BTF or not.
 *  tracepoint  sched:sched_process_fork and sched:sched_process_exec, attached
 *              as raw tracepoints: the classic tracepoint format carries only
 *              pids and comm, the record needs the child's task_struct
 *              (start_time, real_parent, cred), which the raw arguments give.
 *              Exit uses the do_exit kprobe: sched:sched_process_exit fires
 *              after exit_mm() on Debian's 6.1 (RSS would read 0) and no
 *              tracepoint sits in do_exit() before exit_mm().
 *  fentry      BPF trampolines on the same three functions (needs BTF;
 *              compiled only with -DTK_WITH_FENTRY, set when
 *              BPF.support_kfunc() says the kernel can).
 */
/*
 * The logic (count, filter, fill, send) is tk_lifecycle.h's, shared with
 * the CO-RE engine's core/lifecycle.bpf.c; this file holds what is BCC's
 * own: the map declarations, their accessors (BCC rewrites map method calls
 * such as tk_counters.lookup() only in the main source file, so they live
 * here) and the programs' entry points.
 *
 * Compiled with (see toolkit/backends/ebpf.py):
 *   -I<repo>/include -I<repo>/ebpf (tk_task.h: task and mm readers shared
 *   with procs.c)
 *   -DTK_TRANSPORT_RINGBUF=1 -DTK_RINGBUF_PAGES=<power of two>, or
 *   -DTK_TRANSPORT_PERF=1 (perf pages are chosen by user space at open time)
 *   -DTK_WITH_FENTRY=1 when the kernel supports BPF trampolines
 *
 * struct tk_record comes from include/toolkit_record.h, the header the
 * kernel module uses too, so both backends fill the same fields the same
 * way.  All kernel memory is read with bpf_probe_read_kernel(), so the same
 * helpers serve kprobe, raw tracepoint and fentry programs and BCC's
 * rewriter has nothing to guess.
 */
#include <uapi/linux/ptrace.h>
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/mm_types.h>
#include <linux/cred.h>
#include <linux/binfmts.h>

#include "toolkit_record.h"
#include "tk_mm.h"	/* tk_mm_counter(), shared with vm.c */
#include "tk_task.h"	/* uid, kthread, tk_mm_rss(): shared with procs.c */

/*
 * The counters of TK_COUNTER_KINDS (the header's, shared with the module),
 * one per (event type, kind) at TK_COUNTER_KEY(type, kind).  Per-CPU so the
 * hot path never bounces a cache line between CPUs.
 */
BPF_PERCPU_ARRAY(tk_counters, u64, TK_NCOUNTERS);

/*
 * The configuration at the header's TK_CONFIG_SLOTS: TK_CONFIG_UID (real
 * uid) and TK_CONFIG_PPID (parent's tgid, as the module's "ppid N"), each
 * TK_FILTER_OFF or TK_FILTER_ENCODE(id); TK_CONFIG_WAKEUP, the ring
 * buffer's wakeup policy.  Written by user space.
 */
BPF_ARRAY(tk_config, u64, TK_CONFIG_MAX);

/* each CPU's records since its last forced wakeup (TK_CONFIG_WAKEUP) */
BPF_PERCPU_ARRAY(tk_wakeup, u64, 1);

#if defined(TK_TRANSPORT_RINGBUF)
BPF_RINGBUF_OUTPUT(tk_events, TK_RINGBUF_PAGES);
#elif defined(TK_TRANSPORT_PERF)
BPF_PERF_OUTPUT(tk_events);
#else
#error "define TK_TRANSPORT_RINGBUF or TK_TRANSPORT_PERF"
#endif

static __always_inline u64 *tk_counter_slot(u32 key)
{
	return tk_counters.lookup(&key);
}

static __always_inline u64 *tk_config_slot(u32 slot)
{
	return tk_config.lookup(&slot);
}

static __always_inline u64 *tk_wakeup_slot(void)
{
	u32 zero = 0;

	return tk_wakeup.lookup(&zero);
}

#if defined(TK_TRANSPORT_RINGBUF)
static __always_inline struct tk_record *tk_ring_reserve(void)
{
	return tk_events.ringbuf_reserve(sizeof(struct tk_record));
}

static __always_inline void tk_ring_submit(struct tk_record *r, u64 flags)
{
	tk_events.ringbuf_submit(r, flags);
}
#else
static __always_inline int tk_perf_submit(void *ctx, struct tk_record *r)
{
	return tk_events.perf_submit(ctx, r, sizeof(*r));
}
#endif

#include "tk_lifecycle.h"	/* the logic, shared with core/lifecycle.bpf.c */

/* ---- kprobe variant (do_exit is also the tracepoint variant's exit) ---- */

/* runs when a new task is made runnable for the first time */
int kp_wake_up_new_task(struct pt_regs *ctx, struct task_struct *p)
{
	return tk_on_fork(ctx, p);
}

/* runs in the binfmt loader after begin_new_exec() set the new comm */
int kp_setup_new_exec(struct pt_regs *ctx, struct linux_binprm *bprm)
{
	return tk_on_exec(ctx);
}

/* runs at do_exit() entry: the mm is still attached */
int kp_do_exit(struct pt_regs *ctx, long code)
{
	return tk_on_exit(ctx, code);
}

/* ---- tracepoint variant (raw tracepoints) ---- */

/* sched_process_fork(struct task_struct *parent, struct task_struct *child),
 * in kernel_clone() just before wake_up_new_task(child) */
int tp_sched_process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	return tk_on_fork(ctx, (struct task_struct *)ctx->args[1]);
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid,
 * struct linux_binprm *bprm), p == current, after a successful load */
int tp_sched_process_exec(struct bpf_raw_tracepoint_args *ctx)
{
	return tk_on_exec(ctx);
}

/* ---- fentry variant ---- */
#ifdef TK_WITH_FENTRY
KFUNC_PROBE(wake_up_new_task, struct task_struct *p)
{
	return tk_on_fork(ctx, p);
}

KFUNC_PROBE(setup_new_exec, struct linux_binprm *bprm)
{
	return tk_on_exec(ctx);
}

KFUNC_PROBE(do_exit, long code)
{
	return tk_on_exit(ctx, code);
}
#endif
