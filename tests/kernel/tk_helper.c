// SPDX-License-Identifier: GPL-2.0
/*
 * tk_helper - cheap process generators for the lkm kernel tests (TCG-sized).
 *   tk_helper storm SECONDS   fork + _exit in a loop; prints the fork count
 *   tk_helper forks N         N sequential fork + _exit(0); prints N
 *   tk_helper spawn N         N children that pause(); prints "ready N" and
 *                             waits for EOF on stdin, then kills and reaps them
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fork_exit(void)
{
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(0);
	return waitpid(pid, NULL, 0) == pid ? 0 : -1;
}

int main(int argc, char **argv)
{
	long i, n, count = 0;

	if (argc != 3)
		goto usage;
	n = atol(argv[2]);
	if (!strcmp(argv[1], "storm")) {
		double end = now() + n;

		while (now() < end)
			if (fork_exit() == 0)
				count++;
		printf("%ld\n", count);
		return 0;
	}
	if (!strcmp(argv[1], "forks")) {
		for (i = 0; i < n; i++)
			if (fork_exit() == 0)
				count++;
		printf("%ld\n", count);
		return count == n ? 0 : 1;
	}
	if (!strcmp(argv[1], "spawn")) {
		pid_t *pids = calloc(n, sizeof(*pids));
		char buf[64];

		for (i = 0; i < n; i++) {
			pids[i] = fork();
			if (pids[i] < 0) {
				perror("fork");
				n = i;
				break;
			}
			if (pids[i] == 0) {
				for (;;)
					pause();
			}
		}
		printf("ready %ld\n", n);
		fflush(stdout);
		while (fread(buf, 1, sizeof(buf), stdin) > 0)
			;
		for (i = 0; i < n; i++)
			kill(pids[i], SIGKILL);
		for (i = 0; i < n; i++)
			waitpid(pids[i], NULL, 0);
		return 0;
	}
usage:
	fprintf(stderr, "usage: tk_helper storm SECONDS | forks N | spawn N\n");
	return 2;
}
