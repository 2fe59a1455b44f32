// SPDX-License-Identifier: GPL-2.0
/*
 * tk_quota - a process to put under a quota, for tests/kernel/test_quota.py.
 *
 *   tk_quota fd WAY     prepare to make one descriptor by WAY (open, dup,
 *                       dup2, dup3, fcntl, pipe, socket, accept, eventfd,
 *                       epoll, memfd, scm), print "ready OPEN_FDS", wait for
 *                       a line on stdin, make it, print "made", exit 0
 *   tk_quota heap KIND STEP_KIB STEPS
 *                       KIND brk or mmap: print "ready VMDATA_BYTES", wait
 *                       for a line, then grow the heap STEPS times by
 *                       STEP_KIB (sbrk or a private anonymous mapping),
 *                       printing "step I VMDATA_BYTES" after each; exit 0
 *   tk_quota fds N      open N more descriptors (of /dev/null), one at a
 *                       time, printing "fd I" after each; exit 0
 * Output is line-buffered so the test sees every line printed before a
 * SIGKILL.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../bench/quota_self.h"

static void wait_go(long ready)
{
	char buf[16];

	printf("ready %ld\n", ready);
	fflush(stdout);
	if (!fgets(buf, sizeof(buf), stdin))
		exit(3);
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static int send_fd(int sock, int fd)
{
	char data = 'x', ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char data, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	int fd;

	if (recvmsg(sock, &msg, 0) != 1 || !CMSG_FIRSTHDR(&msg))
		return -1;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	return fd;
}

static int fd_way(const char *way)
{
	int base = open("/dev/null", O_RDONLY);
	int sv[2], pfd[2], lsn = -1, cli, r = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (base < 0)
		die("open");
	if (!strcmp(way, "accept")) {
		/* an abstract socket with one connection already queued */
		snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1,
			 "tk_quota.%d", getpid());
		lsn = socket(AF_UNIX, SOCK_STREAM, 0);
		cli = socket(AF_UNIX, SOCK_STREAM, 0);
		if (lsn < 0 || cli < 0 ||
		    bind(lsn, (struct sockaddr *)&sa, sizeof(sa)) ||
		    listen(lsn, 1) ||
		    connect(cli, (struct sockaddr *)&sa, sizeof(sa)))
			die("accept setup");
	}
	if (!strcmp(way, "scm")) {
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) || send_fd(sv[0], base))
			die("scm setup");
	}
	wait_go(open_fds());
	if (!strcmp(way, "open"))
		r = open("/dev/null", O_RDONLY);
	else if (!strcmp(way, "dup"))
		r = dup(base);
	else if (!strcmp(way, "dup2"))
		r = dup2(base, 200);
	else if (!strcmp(way, "dup3"))
		r = dup3(base, 201, O_CLOEXEC);
	else if (!strcmp(way, "fcntl"))
		r = fcntl(base, F_DUPFD, 100);
	else if (!strcmp(way, "pipe"))
		r = pipe(pfd);
	else if (!strcmp(way, "socket"))
		r = socket(AF_INET, SOCK_DGRAM, 0);
	else if (!strcmp(way, "accept"))
		r = accept(lsn, NULL, NULL);
	else if (!strcmp(way, "eventfd"))
		r = eventfd(0, 0);
	else if (!strcmp(way, "epoll"))
		r = epoll_create1(0);
	else if (!strcmp(way, "memfd"))
		r = memfd_create("tk_quota", 0);
	else if (!strcmp(way, "scm"))
		r = recv_fd(sv[1]);
	else
		exit(4);
	if (r < 0)
		die(way);
	printf("made %ld\n", open_fds());
	return 0;
}

static int heap(const char *kind, long step_kib, long steps)
{
	size_t step = (size_t)step_kib * 1024;
	long i;

	wait_go(vmdata_bytes());
	for (i = 1; i <= steps; i++) {
		void *p;

		if (!strcmp(kind, "brk"))
			p = sbrk(step);
		else
			p = mmap(NULL, step, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == (void *)-1 || p == MAP_FAILED)
			die(kind);
		printf("step %ld %ld\n", i, vmdata_bytes());
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	long i, n;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "fd"))
		return fd_way(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "heap"))
		return heap(argv[2], atol(argv[3]), atol(argv[4]));
	if (argc == 3 && !strcmp(argv[1], "fds")) {
		n = atol(argv[2]);
		for (i = 1; i <= n; i++) {
			if (open("/dev/null", O_RDONLY) < 0)
				die("open");
			printf("fd %ld\n", i);
		}
		return 0;
	}
	fprintf(stderr, "usage: tk_quota fd WAY | heap brk|mmap STEP_KIB STEPS | fds N\n");
	return 1;
}
