// SPDX-License-Identifier: GPL-2.0
/*
 * tk-child - what a forkstorm child execs with --exec.
 *
 * Usage: tk-child SLOT_FD IDX LIFETIME_MS THREADS ALLOC_MIB
 * Does exactly what a forked child does (storm_child.h) after the exec.
 */
#include "storm_child.h"

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: tk-child SLOT_FD IDX LIFETIME_MS THREADS ALLOC_MIB\n");
		return 125;
	}
	storm_child_run(atoi(argv[1]), strtoul(argv[2], NULL, 10),
			(unsigned int)atoi(argv[3]), (unsigned int)atoi(argv[4]),
			(unsigned int)atoi(argv[5]));
	return 125;
}
