/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_mm.h - reading an mm_struct's RSS counters from BPF, shared by
 * lifecycle.c (the exit record's RSS) and vm.c (toolkit inspect).
 *
 * The exact sum of the per-CPU parts (what /proc/PID/status shows from
 * 6.16) is tk_vm.h's: it needs per-CPU offsets, which each engine finds
 * its own way.
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
 * One mm RSS counter's folded value in pages, not clamped: on >= 6.2 the
 * percpu_counter's count (the per-CPU deltas are tk_vm.h's to add), on
 * <= 6.1 the atomic.  Unless pcpu is NULL, *pcpu gets the address of the
 * per-CPU s32 deltas (0 on <= 6.1, where there are none); the lifecycle
 * programs pass NULL and skip that read.
 */
static __always_inline long tk_mm_counter_raw(struct mm_struct *mm,
					      int member, u64 *pcpu)
{
	long val = 0;

	if (pcpu)
		*pcpu = 0;
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
		if (pcpu)
			bpf_probe_read_kernel(pcpu, sizeof(*pcpu), elem +
				bpf_core_field_offset(struct percpu_counter,
						      counters));
		val = count;
	}
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	s64 count = 0;

	bpf_probe_read_kernel(&count, sizeof(count),
			      &mm->rss_stat[member].count);
	if (pcpu)
		bpf_probe_read_kernel(pcpu, sizeof(*pcpu),
				      &mm->rss_stat[member].counters);
	val = count;
#else
	bpf_probe_read_kernel(&val, sizeof(val),
			      &mm->rss_stat.count[member].counter);
#endif
	return val;
}

/* One mm RSS counter in pages, clamped at 0: the cheap read,
 * get_mm_counter() (on >= 6.2 the folded value only). */
static __always_inline long tk_mm_counter(struct mm_struct *mm, int member)
{
	long val = tk_mm_counter_raw(mm, member, NULL);

	return val < 0 ? 0 : val;
}

#endif /* TK_MM_H */
