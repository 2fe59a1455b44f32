// SPDX-License-Identifier: GPL-2.0
/*
 * memapp - a scripted sequence of allocations, stopping after each step so an
 * inspector can sample a known state (toolkit bench memgrowth drives it).
 *
 * After each step it prints one line on stdout and waits for a line on stdin:
 *   step <n> <name> small=<B> big=<B> depth=<B> touched=<pages>
 * small: bytes live in malloc/calloc blocks below the mmap threshold
 * big:   bytes live in blocks above it (each served by its own mmap)
 * depth: bytes of stack frames live in the recursion (0 outside it)
 * touched: pages of the mmap'd region written so far
 * EOF on stdin ends the script early.  The last line is "done".
 *
 * glibc raises its mmap threshold at run time (dynamic threshold, up to 32 MiB
 * on 64-bit) after a large block is freed, which would make the run depend on
 * its own history: M_MMAP_THRESHOLD pins it (and turns the dynamic threshold
 * off), M_TRIM_THRESHOLD keeps free() from shrinking brk mid-experiment.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THRESHOLD	(128 * 1024)	/* mmap threshold, pinned */
#define SMALL		(64 * 1024)	/* below it: served from brk */
#define NSMALL		8
#define BIG		(1024 * 1024)	/* above it: its own mmap */
#define FRAME		4096		/* stack bytes per recursion level */
#define REGION_PAGES	1024		/* the mmap'd region, 4 MiB of 4 KiB pages */

static size_t small, big, depth, touched;
static int step;

static void pause_step(const char *name)
{
	char line[64];

	printf("step %d %s small=%zu big=%zu depth=%zu touched=%zu\n", step++,
	       name, small, big, depth, touched);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		exit(0);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p) {
		perror("malloc");
		exit(1);
	}
	memset(p, 0x5a, n);	/* touch it: RSS follows */
	return p;
}

/* Recurse @levels frames of FRAME bytes each, pause at the bottom. */
static int recurse(int levels, const char *name)
{
	volatile char frame[FRAME];
	int r;

	frame[0] = (char)levels;
	memset((char *)frame, levels, sizeof(frame));
	depth += FRAME;
	if (levels > 1)
		r = recurse(levels - 1, name);
	else {
		pause_step(name);
		r = 0;
	}
	depth -= FRAME;
	return r + frame[levels % FRAME];
}

int main(void)
{
	static const int depths[] = { 16, 64, 256, 1024 };	/* frames */
	char name[32];
	void *s[NSMALL], *b, *c, *r;
	long page = sysconf(_SC_PAGESIZE);
	char *region;
	size_t i;

	if (!mallopt(M_MMAP_THRESHOLD, THRESHOLD) ||
	    !mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024)) {
		fprintf(stderr, "memapp: mallopt failed\n");
		return 1;
	}
	pause_step("start");

	for (i = 0; i < NSMALL; i++) {
		s[i] = xmalloc(SMALL);
		small += SMALL;
		snprintf(name, sizeof(name), "malloc-small-%zu", i + 1);
		pause_step(name);
	}
	b = xmalloc(BIG);
	big += BIG;
	pause_step("malloc-1MiB");
	free(b);
	big -= BIG;
	pause_step("free-1MiB");

	c = calloc(1, SMALL);
	if (!c)
		return 1;
	small += SMALL;
	pause_step("calloc-small");
	r = realloc(c, 2 * BIG);	/* grows past the threshold: moves to mmap */
	if (!r)
		return 1;
	memset(r, 1, 2 * BIG);
	small -= SMALL;
	big += 2 * BIG;
	pause_step("realloc-2MiB");
	free(r);
	big -= 2 * BIG;
	for (i = 0; i < NSMALL; i++)
		free(s[i]);
	small = 0;
	pause_step("free-all");

	for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		snprintf(name, sizeof(name), "recurse-%d", depths[i]);
		recurse(depths[i], name);
	}

	region = mmap(NULL, REGION_PAGES * page, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	pause_step("mmap-4MiB");
	for (i = 0; i < REGION_PAGES; i++) {
		region[i * page] = 1;
		touched++;
		if (touched == 64 || touched == 256 || touched == 512 ||
		    touched == REGION_PAGES)
			pause_step("touch");
	}
	munmap(region, REGION_PAGES * page);
	touched = 0;
	pause_step("munmap");
	printf("done\n");
	return 0;
}
