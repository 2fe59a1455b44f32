/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_mm.h - reading an mm_struct's RSS counters from BPF, shared by
 * lifecycle.c (the exit record's RSS) and vm.c (toolkit inspect).
 *
 * Only bpf_probe_read_kernel() and plain C here: BCC rewrites map method
 * calls only in the main source file, so an included header must not use
 * them.  Needs <linux/mm_types.h> and <linux/version.h> first.
 *
 * The counters' type changed in 6.2 (f1a7941243c1 "mm: convert mm's rss
 * stats into percpu_counter"):
 *   <= 6.1  mm->rss_stat.count[] is an atomic_long_t each; threads cache up
 *           to 64 updates (SPLIT_RSS_COUNTING) that /proc/PID/status does
 *           not see either (it reads the atomic, as this does).
 *   >= 6.2  mm->rss_stat[] is a struct percpu_counter: 'count' is the
 *           folded value, up to batch * nr_cpus pages short of the truth;
 *           the rest sits in the per-CPU s32 'counters'.
 */
#ifndef TK_MM_H
#define TK_MM_H

/*
 * The most CPUs tk_mm_counter_sum() adds up: a bounded loop the verifier
 * can walk.  More CPUs than this and the caller says the sum is partial.
 */
#define TK_MM_MAX_CPUS	64

/* One mm RSS counter in pages, clamped at 0: the cheap read,
 * get_mm_counter() (on >= 6.2 the folded value only). */
static __always_inline long tk_mm_counter(struct mm_struct *mm, int member)
{
	long val = 0;

#ifdef TK_CORE
	/* the kernel's BTF decides: struct mm_rss_stat went away in 6.2 */
	if (bpf_core_type_exists(struct mm_rss_stat)) {
		struct mm_struct___pre62 *old = (void *)mm;

		bpf_probe_read_kernel(&val, sizeof(val),
				      &old->rss_stat.count[member].counter);
	} else {
		/* struct percpu_counter rss_stat[]: its size is the kernel's
		 * (config-dependent), so index with the relocated size */
		struct mm_struct___v62 *new = (void *)mm;
		char *elem = (char *)&new->rss_stat +
			member * bpf_core_type_size(struct percpu_counter);
		s64 count = 0;

		bpf_probe_read_kernel(&count, sizeof(count), elem +
			bpf_core_field_offset(struct percpu_counter, count));
		val = count;
	}
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	s64 count = 0;

	bpf_probe_read_kernel(&count, sizeof(count),
			      &mm->rss_stat[member].count);
	val = count;
#else
	bpf_probe_read_kernel(&val, sizeof(val),
			      &mm->rss_stat.count[member].counter);
#endif
	return val < 0 ? 0 : val;
}

#ifndef TK_CORE	/* inspect (vm.c) is BCC-only so far */
/*
 * One mm RSS counter in pages as /proc/PID/status shows it (and as the
 * module's tk_rss() reads it): on >= 6.2 the folded value plus every
 * CPU's delta, as percpu_counter_sum_positive() does.  A per-CPU address
 * is the counter's address plus __per_cpu_offset[cpu]; the caller passes
 * the address of that array (from kallsyms) and nr_cpu_ids.  Offline CPUs
 * hold 0 (their deltas are folded when they go down), so adding every
 * possible CPU is the same sum.  On <= 6.1 the plain read is the sum.
 */
static __always_inline long tk_mm_counter_sum(struct mm_struct *mm,
					      int member, u64 pcpu_offsets,
					      u32 ncpus)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	s64 count = 0;
	u64 counters = 0;
	u32 cpu;

	bpf_probe_read_kernel(&count, sizeof(count),
			      &mm->rss_stat[member].count);
	bpf_probe_read_kernel(&counters, sizeof(counters),
			      &mm->rss_stat[member].counters);
	if (!pcpu_offsets || !counters)
		return count < 0 ? 0 : count;
	for (cpu = 0; cpu < TK_MM_MAX_CPUS && cpu < ncpus; cpu++) {
		u64 off = 0;
		s32 delta = 0;

		bpf_probe_read_kernel(&off, sizeof(off),
				      (void *)(pcpu_offsets + cpu * 8));
		bpf_probe_read_kernel(&delta, sizeof(delta),
				      (void *)(counters + off));
		count += delta;
	}
	return count < 0 ? 0 : count;
#else
	return tk_mm_counter(mm, member);
#endif
}
#endif /* !TK_CORE */

#endif /* TK_MM_H */
