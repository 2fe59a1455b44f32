/* SPDX-License-Identifier: GPL-2.0 */
/*
 * quota_self.h - what a process under a quota reads about itself: its heap
 * as the quotas count it (VmData, i.e. mm->data_vm) and its open
 * descriptors.  Shared by bench/quotaload.c and tests/kernel/tk_quota.c.
 */
#ifndef QUOTA_SELF_H
#define QUOTA_SELF_H

#include <fcntl.h>
#include <stdio.h>

static long vmdata_bytes(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmData: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib * 1024;
}

/* descriptors 0..65535 that are open */
static long open_fds(void)
{
	long fd, n = 0;

	for (fd = 0; fd < 65536; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

#endif /* QUOTA_SELF_H */
