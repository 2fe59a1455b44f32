// SPDX-License-Identifier: GPL-2.0
/*
 * quotaload - the workload of `toolkit bench quota`.
 *
 *   quotaload heap brk|mmap STEP_KIB STATE_FILE
 *   quotaload files STATE_FILE
 *       print "ready VMDATA_BYTES OPEN_FDS", wait for a line on stdin, then
 *       grow until stopped: the heap by STEP_KIB at a time (sbrk, or a
 *       private anonymous mapping), every page touched so a memory cgroup
 *       charges it; or one descriptor at a time, cycling open, pipe (two),
 *       socket, eventfd, dup.  Before each call the state file (mmap'd
 *       MAP_SHARED, read by the harness after death) gets the call's start
 *       time, CLOCK_MONOTONIC ns, and the value before it.  A refused call
 *       (RLIMIT_DATA: ENOMEM, RLIMIT_NOFILE: EMFILE) exits 3 with errno in
 *       the state; nothing stops it otherwise (a cap of 1 TiB / 1M fds).
 *   quotaload cost N
 *       print "ready ...", wait for a line, then time N of each call
 *       (brk +4 KiB, brk -4 KiB, mmap 4 KiB, munmap, openat, close) one by
 *       one and print "cost brk NS mmap NS munmap NS openat NS close NS",
 *       the mean ns per call (brk is both directions).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "quota_self.h"

/* what the harness reads: 6 u64, native byte order */
struct state {
	uint64_t call_start_ns;	/* start of the latest call */
	uint64_t before;	/* VmData bytes or open fds before it */
	uint64_t calls;		/* calls made, the latest included */
	uint64_t step;		/* bytes or descriptors one call adds */
	uint64_t err;		/* errno of a refused call, else 0 */
	uint64_t done_ns;	/* end of the latest call that returned */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static struct state *map_state(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	struct state *s;

	if (fd < 0 || ftruncate(fd, sizeof(*s)))
		exit(2);
	s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s == MAP_FAILED)
		exit(2);
	close(fd);
	memset(s, 0, sizeof(*s));
	return s;
}

static void ready(void)
{
	char buf[16];

	printf("ready %ld %ld\n", vmdata_bytes(), open_fds());
	fflush(stdout);
	if (!fgets(buf, sizeof(buf), stdin))
		exit(4);
}

static int grow_heap(int use_brk, long step_kib, struct state *s)
{
	size_t step = (size_t)step_kib * 1024;

	s->step = step;
	ready();
	for (;;) {
		char *p;

		s->before = vmdata_bytes();
		s->calls++;
		s->call_start_ns = now_ns();
		if (use_brk)
			p = sbrk(step);
		else
			p = mmap(NULL, step, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == (void *)-1) {
			s->err = errno;
			return 3;
		}
		s->done_ns = now_ns();
		memset(p, 1, step);
		if (s->calls > (1ull << 40) / step)
			return 0;
	}
}

static int grow_files(struct state *s)
{
	int base = open("/dev/null", O_RDONLY), pfd[2], r = 0;

	if (base < 0)
		return 2;
	ready();
	for (;;) {
		s->before = open_fds();
		s->calls++;
		s->step = s->calls % 5 == 1 ? 2 : 1;
		s->call_start_ns = now_ns();
		switch (s->calls % 5) {
		case 0:
			r = open("/dev/null", O_RDONLY);
			break;
		case 1:
			r = pipe(pfd);
			break;
		case 2:
			r = socket(AF_UNIX, SOCK_DGRAM, 0);
			break;
		case 3:
			r = eventfd(0, 0);
			break;
		case 4:
			r = dup(base);
			break;
		}
		if (r < 0) {
			s->err = errno;
			return 3;
		}
		s->done_ns = now_ns();
		if (s->calls > 1000000)
			return 0;
	}
}

static int cost(long n)
{
	uint64_t t[6] = { 0 }, a;
	long i;

	ready();
	for (i = 0; i < n; i++) {
		void *p;
		int fd;

		a = now_ns();
		sbrk(4096);
		t[0] += now_ns() - a;
		a = now_ns();
		sbrk(-4096);
		t[1] += now_ns() - a;
		a = now_ns();
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		t[2] += now_ns() - a;
		a = now_ns();
		munmap(p, 4096);
		t[3] += now_ns() - a;
		a = now_ns();
		fd = openat(AT_FDCWD, "/dev/null", O_RDONLY);
		t[4] += now_ns() - a;
		a = now_ns();
		close(fd);
		t[5] += now_ns() - a;
	}
	printf("cost brk %.1f mmap %.1f munmap %.1f openat %.1f close %.1f\n",
	       (t[0] + t[1]) / 2.0 / n, (double)t[2] / n, (double)t[3] / n,
	       (double)t[4] / n, (double)t[5] / n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "heap"))
		return grow_heap(!strcmp(argv[2], "brk"), atol(argv[3]),
				 map_state(argv[4]));
	if (argc == 3 && !strcmp(argv[1], "files"))
		return grow_files(map_state(argv[2]));
	if (argc == 3 && !strcmp(argv[1], "cost"))
		return cost(atol(argv[2]));
	fprintf(stderr, "usage: quotaload heap brk|mmap STEP_KIB STATE | "
		"files STATE | cost N\n");
	return 1;
}
