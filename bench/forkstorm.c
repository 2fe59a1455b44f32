// SPDX-License-Identifier: GPL-2.0
/*
 * forkstorm - fork children fast and write a ground-truth ledger of them.
 *
 * Every child: optionally execs tk-child (--exec, --exec-every K), starts
 * --threads threads, touches --alloc-mib MiB, lives --lifetime ms, reads its
 * own VmRSS/VmHWM, writes them into its slot of a shared memfd and exits
 * with status idx % 7.  The parent stamps CLOCK_MONOTONIC just before and
 * just after fork() and after waitpid(), and reads the kernel's fork
 * counter (`processes` in /proc/stat) before and after the storm.
 *
 * The ledger (--ledger FILE, CSV) has one row per child:
 *   idx,pid,fork_ns,forked_ns,exec,exit_ns,reap_ns,exit_status,rss_kib,hwm_kib,threads
 * A one-line JSON summary goes to stdout.
 */
#include "storm_child.h"	/* first: it defines _GNU_SOURCE */

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>

struct row {
	pid_t pid;
	int exec;
	int status;
	uint64_t fork_ns, forked_ns, reap_ns;
};

struct active {
	pid_t pid;
	unsigned long idx;
};

static struct {
	unsigned long count;
	double rate;
	unsigned int concurrency, lifetime_ms, threads, alloc_mib, exec_every;
	int wait_start;
	const char *ledger, *helper;
} opt = { .count = 1000, .concurrency = 1 };

static struct row *rows;
static struct active *act;
static unsigned int nactive;

static unsigned long long kernel_forks(void)
{
	char line[512];
	unsigned long long v = 0;
	FILE *f = fopen("/proc/stat", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "processes %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Reap one child (blocking or not); returns 1 if one was reaped. */
static int reap_one(int block)
{
	int status;
	unsigned int i;
	pid_t pid = waitpid(-1, &status, block ? 0 : WNOHANG);
	uint64_t now = storm_now_ns();

	if (pid <= 0)
		return 0;
	for (i = 0; i < nactive; i++) {
		if (act[i].pid != pid)
			continue;
		rows[act[i].idx].reap_ns = now;
		rows[act[i].idx].status = status;
		act[i] = act[--nactive];
		return 1;
	}
	return 1;	/* not ours (cannot happen): ignore */
}

static void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: forkstorm [--count N] [--rate FORKS_PER_S] [--concurrency C]\n"
		"                 [--lifetime MS] [--exec] [--exec-every K] [--threads K]\n"
		"                 [--alloc-mib M] [--ledger FILE] [--helper PATH]\n"
		"                 [--wait-start]\n");
	exit(status);
}

static void parse(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "rate", required_argument, NULL, 'r' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "lifetime", required_argument, NULL, 'l' },
		{ "exec", no_argument, NULL, 'e' },
		{ "exec-every", required_argument, NULL, 'E' },
		{ "threads", required_argument, NULL, 't' },
		{ "alloc-mib", required_argument, NULL, 'm' },
		{ "ledger", required_argument, NULL, 'o' },
		{ "helper", required_argument, NULL, 'x' },
		{ "wait-start", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "n:r:c:l:eE:t:m:o:x:wh", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'n': opt.count = strtoul(optarg, NULL, 10); break;
		case 'r': opt.rate = strtod(optarg, NULL); break;
		case 'c': opt.concurrency = (unsigned int)atoi(optarg); break;
		case 'l': opt.lifetime_ms = (unsigned int)atoi(optarg); break;
		case 'e': opt.exec_every = 1; break;
		case 'E': opt.exec_every = (unsigned int)atoi(optarg); break;
		case 't': opt.threads = (unsigned int)atoi(optarg); break;
		case 'm': opt.alloc_mib = (unsigned int)atoi(optarg); break;
		case 'o': opt.ledger = optarg; break;
		case 'x': opt.helper = optarg; break;
		case 'w': opt.wait_start = 1; break;
		case 'h': usage(0); break;
		default: usage(2);
		}
	}
	if (optind != argc || opt.concurrency < 1 || opt.rate < 0)
		usage(2);
	if (opt.exec_every && !opt.helper) {
		fprintf(stderr, "forkstorm: --exec needs --helper PATH (tk-child)\n");
		exit(2);
	}
}

static void child(int slot_fd, unsigned long idx, int do_exec)
{
	char a[5][32];

	if (!do_exec)
		storm_child_run(slot_fd, idx, opt.lifetime_ms, opt.threads,
				opt.alloc_mib);
	snprintf(a[0], sizeof(a[0]), "%d", slot_fd);
	snprintf(a[1], sizeof(a[1]), "%lu", idx);
	snprintf(a[2], sizeof(a[2]), "%u", opt.lifetime_ms);
	snprintf(a[3], sizeof(a[3]), "%u", opt.threads);
	snprintf(a[4], sizeof(a[4]), "%u", opt.alloc_mib);
	execl(opt.helper, "tk-child", a[0], a[1], a[2], a[3], a[4], (char *)NULL);
	_exit(127);
}

static int write_ledger(const struct storm_slot *slots)
{
	unsigned long i;
	FILE *f = fopen(opt.ledger, "w");

	if (!f) {
		perror(opt.ledger);
		return -1;
	}
	fprintf(f, "idx,pid,fork_ns,forked_ns,exec,exit_ns,reap_ns,exit_status,"
		"rss_kib,hwm_kib,threads\n");
	for (i = 0; i < opt.count; i++) {
		const struct row *r = &rows[i];
		const struct storm_slot *s = &slots[i];

		fprintf(f, "%lu,%d,%" PRIu64 ",%" PRIu64 ",%d,%" PRIu64 ",%" PRIu64
			",%d,%" PRIu64 ",%" PRIu64 ",%u\n", i, (int)r->pid,
			r->fork_ns, r->forked_ns, r->exec,
			s->done ? s->exit_ns : 0, r->reap_ns, r->status,
			s->rss_kib, s->hwm_kib, s->threads);
	}
	return fclose(f);
}

int main(int argc, char **argv)
{
	struct storm_slot *slots;
	unsigned long long kf0, kf1;
	unsigned long i, fork_errors = 0;
	uint64_t t0, t1;
	size_t len;
	int fd;

	parse(argc, argv);
	signal(SIGCHLD, SIG_DFL);
	rows = calloc(opt.count ? opt.count : 1, sizeof(*rows));
	act = calloc(opt.concurrency, sizeof(*act));
	len = (opt.count ? opt.count : 1) * sizeof(*slots);
	fd = memfd_create("forkstorm-slots", 0);	/* inherited across exec */
	if (!rows || !act || fd < 0 || ftruncate(fd, (off_t)len)) {
		perror("forkstorm: setup");
		return 1;
	}
	slots = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (slots == MAP_FAILED) {
		perror("forkstorm: mmap");
		return 1;
	}

	/*
	 * --wait-start: print our pid and fork nothing until a line arrives on
	 * stdin, so the harness can scope a backend to our children first.
	 */
	if (opt.wait_start) {
		char line[16];

		printf("ready %d\n", (int)getpid());
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin)) {
			fprintf(stderr, "forkstorm: no start line on stdin\n");
			return 1;
		}
	}
	kf0 = kernel_forks();
	t0 = storm_now_ns();
	for (i = 0; i < opt.count; i++) {
		int do_exec = opt.exec_every && i % opt.exec_every == 0;
		pid_t pid;

		while (nactive >= opt.concurrency)
			reap_one(1);
		if (opt.rate > 0) {
			uint64_t due = t0 + (uint64_t)((double)i * 1e9 / opt.rate);

			while (storm_now_ns() < due) {
				if (nactive && reap_one(0))
					continue;
				uint64_t left = due - storm_now_ns();
				struct timespec ts = { 0, (long)(left > 1000000 ? 1000000 : left) };

				if ((int64_t)left > 0)
					nanosleep(&ts, NULL);
			}
		}
		rows[i].exec = do_exec;
		rows[i].fork_ns = storm_now_ns();
		pid = fork();
		if (pid == 0)
			child(fd, i, do_exec);
		rows[i].forked_ns = storm_now_ns();
		if (pid < 0) {
			fork_errors++;
			if (nactive)
				reap_one(1);
			else
				storm_sleep_ms(1);
			i--;
			continue;
		}
		rows[i].pid = pid;
		act[nactive].pid = pid;
		act[nactive++].idx = i;
	}
	while (nactive)
		reap_one(1);
	t1 = storm_now_ns();
	kf1 = kernel_forks();

	if (opt.ledger && write_ledger(slots))
		return 1;
	printf("{\"pid\": %d, \"count\": %lu, \"start_ns\": %" PRIu64
	       ", \"end_ns\": %" PRIu64 ", \"elapsed_s\": %.6f, \"forks_per_s\": %.3f"
	       ", \"kernel_forks_before\": %llu, \"kernel_forks_after\": %llu"
	       ", \"fork_errors\": %lu}\n", (int)getpid(), opt.count, t0, t1,
	       (double)(t1 - t0) / 1e9,
	       t1 > t0 ? (double)opt.count * 1e9 / (double)(t1 - t0) : 0.0,
	       kf0, kf1, fork_errors);
	return 0;
}
