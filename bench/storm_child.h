/* SPDX-License-Identifier: GPL-2.0 */
/*
 * storm_child.h - what every forkstorm child does, whether it runs in the
 * forked copy of forkstorm or after exec'ing tk-child: start threads, touch
 * memory, live for its lifetime, read its own VmRSS/VmHWM, write its ledger
 * slot into the shared memfd and _exit(idx % 7).
 */
#ifndef STORM_CHILD_H
#define STORM_CHILD_H

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One ledger slot per child, written by the child, read by the parent. */
struct storm_slot {
	uint64_t exit_ns;	/* CLOCK_MONOTONIC just before _exit */
	uint64_t rss_kib;	/* VmRSS just before exit */
	uint64_t hwm_kib;	/* VmHWM just before exit */
	uint32_t threads;	/* threads started (and joined) */
	uint32_t done;		/* 1 once the slot is written */
};

static inline uint64_t storm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void storm_sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* VmRSS and VmHWM of this process, KiB (0 if unreadable). */
static inline void storm_read_rss(uint64_t *rss, uint64_t *hwm)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	unsigned long long v;

	*rss = *hwm = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %llu", &v) == 1)
			*rss = v;
		else if (sscanf(line, "VmHWM: %llu", &v) == 1)
			*hwm = v;
	}
	fclose(f);
}

static unsigned int storm_thread_ms;

static void *storm_thread(void *arg)
{
	(void)arg;
	if (storm_thread_ms)
		storm_sleep_ms(storm_thread_ms);
	return NULL;
}

/*
 * The child's life.  slot_fd is the shared memfd (the slot is written with
 * pwrite so an exec'd child needs no mapping); never returns.
 */
static inline void storm_child_run(int slot_fd, unsigned long idx,
				   unsigned int lifetime_ms, unsigned int threads,
				   unsigned int alloc_mib)
{
	struct storm_slot s = { 0 };
	pthread_t tids[256];
	unsigned int i, started = 0;
	char *mem = NULL;

	if (alloc_mib) {
		size_t len = (size_t)alloc_mib << 20;

		mem = malloc(len);
		if (mem)
			memset(mem, (int)(idx & 0xff) | 1, len);
	}
	storm_thread_ms = lifetime_ms;
	if (threads > 256)
		threads = 256;
	for (i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, storm_thread, NULL) == 0)
			started++;
	if (lifetime_ms)
		storm_sleep_ms(lifetime_ms);
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	storm_read_rss(&s.rss_kib, &s.hwm_kib);
	s.threads = started;
	s.done = 1;
	s.exit_ns = storm_now_ns();
	if (pwrite(slot_fd, &s, sizeof(s), (off_t)(idx * sizeof(s))) != sizeof(s))
		_exit(126);
	/* keep the touched memory live until the very end */
	if (mem)
		__asm__ __volatile__("" : : "r"(mem) : "memory");
	_exit((int)(idx % 7));
}

#endif /* STORM_CHILD_H */
