/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tk_vmlinux.h - the kernel types the CO-RE programs read, and only those,
 * in place of a full vmlinux.h (bpftool btf dump ... format c: 2.8 MB, and
 * tied to the kernel it was dumped from).
 *
 * Every struct is marked preserve_access_index: clang records each field
 * access by name, and libbpf rewrites the offsets at load time from the
 * running kernel's BTF (/sys/kernel/btf/vmlinux).  So a struct here lists
 * only the fields the programs touch, in any order, and the object built
 * from it loads on any kernel whose BTF has those fields (6.1, 6.12, 6.18
 * alike).  Field types must be the kernel's (reads copy sizeof(field)).
 *
 * Flavours (a name ending in ___something) describe a layout some kernels
 * have: libbpf matches them to the kernel's type of the name before the
 * "___", and bpf_core_field_exists() / bpf_core_type_exists() on them tell
 * at load time which layout this kernel has.
 */
#ifndef TK_VMLINUX_H
#define TK_VMLINUX_H
#define __VMLINUX_H__	/* bpf_tracing.h: kernel pt_regs names (di, si, ...) */

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __s32 s32;
typedef __u32 u32;
typedef __s64 s64;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef unsigned int uid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

/* x86-64 registers as a kprobe sees them (stable user ABI layout) */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

/* uapi: enum bpf_map_type, ring buffer flags */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* include/linux/sched.h */
#define PF_KTHREAD		0x00200000

/* task state bits, include/linux/sched.h (the same on 5.14 .. 6.18) */
#define TASK_RUNNING		0x00000000
#define TASK_INTERRUPTIBLE	0x00000001
#define TASK_UNINTERRUPTIBLE	0x00000002
#define __TASK_STOPPED		0x00000004
#define __TASK_TRACED		0x00000008
#define EXIT_DEAD		0x00000010
#define EXIT_ZOMBIE		0x00000020
#define TASK_PARKED		0x00000040
#define TASK_DEAD		0x00000080
#define TASK_WAKEKILL		0x00000100
#define TASK_NOLOAD		0x00000400
#define TASK_RTLOCK_WAIT	0x00001000
#define TASK_FROZEN		0x00008000
#define TASK_IDLE		(TASK_UNINTERRUPTIBLE | TASK_NOLOAD)
#define TASK_REPORT		(TASK_RUNNING | TASK_INTERRUPTIBLE | \
				 TASK_UNINTERRUPTIBLE | __TASK_STOPPED | \
				 __TASK_TRACED | EXIT_DEAD | EXIT_ZOMBIE | \
				 TASK_PARKED)
#define TASK_REPORT_IDLE	(TASK_REPORT + 1)

/* the mm counters' indices: an anonymous enum in the kernel, stable values */
enum {
	MM_FILEPAGES = 0,
	MM_ANONPAGES = 1,
	MM_SWAPENTS = 2,
	MM_SHMEMPAGES = 3,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), \
			     apply_to = record)

struct list_head {
	struct list_head *next, *prev;
};

typedef struct {
	s64 counter;
} atomic64_t;
typedef atomic64_t atomic_long_t;

typedef struct {
	uid_t val;
} kuid_t;

struct cred {
	kuid_t uid;
};

struct percpu_counter {
	s64 count;
	s32 *counters;
};

/* <= 6.1: the mm's counters are atomics */
struct mm_rss_stat {
	atomic_long_t count[4];
};

typedef struct {
	unsigned long pgd;
} pgd_t;

struct mm_struct {
	unsigned long task_size;
	pgd_t *pgd;
	int map_count;
	unsigned long hiwater_rss;
	unsigned long total_vm;
	unsigned long locked_vm;
	unsigned long data_vm;
	unsigned long exec_vm;
	unsigned long stack_vm;
	unsigned long start_code, end_code, start_data, end_data;
	unsigned long start_brk, brk, start_stack;
	unsigned long arg_start, arg_end, env_start, env_end;
};

/* toolkit inspect (vm.bpf.c): VMAs, their files and the files' paths */
struct hlist_bl_node {
	struct hlist_bl_node *next, **pprev;
};

struct qstr {
	const unsigned char *name;
};

struct dentry;

struct dentry_operations {
	char *(*d_dname)(struct dentry *dentry, char *buf, int len);
};

struct dentry {
	struct hlist_bl_node d_hash;
	struct dentry *d_parent;
	struct qstr d_name;
	const struct dentry_operations *d_op;
};

struct vfsmount {
	struct dentry *mnt_root;
};

/* fs/mount.h: the vfsmount is embedded in it */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct fs_struct {
	struct path root;
};

struct file {
	unsigned int f_mode;
	struct path f_path;
};

/* >= 6.8: a file opened by overlayfs on the user's behalf */
struct backing_file {
	struct path user_path;
};

struct vm_area_struct;

struct vm_operations_struct {
	const char *(*name)(struct vm_area_struct *vma);
};

struct vm_special_mapping {
	const char *name;
};

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	struct mm_struct *vm_mm;
	unsigned long vm_flags;
	const struct vm_operations_struct *vm_ops;
	unsigned long vm_pgoff;
	struct file *vm_file;
	void *vm_private_data;
};

/* a per-CPU array map's struct: pptrs[] is each element's per-CPU base */
struct bpf_array {
	void *pptrs[0];
};

struct mm_struct___pre62 {
	struct mm_rss_stat rss_stat;
};

/* >= 6.2: per-CPU counters */
struct mm_struct___v62 {
	struct percpu_counter rss_stat[4];
};

struct sched_entity {
	u64 sum_exec_runtime;
};

struct signal_struct {
	int nr_threads;
	struct list_head thread_head;
	struct task_struct *group_exec_task;	/* 5.16 and later */
	u64 utime;
	u64 stime;
	unsigned long long sum_sched_runtime;
};

/* include/linux/fdtable.h */
struct fdtable {
	unsigned int max_fds;
	unsigned long *open_fds;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	unsigned int __state;
	unsigned int flags;
	struct sched_entity se;
	struct mm_struct *mm;
	int exit_state;
	int exit_code;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct list_head thread_node;
	u64 utime;
	u64 stime;
	u64 start_time;
	const struct cred *real_cred;
	char comm[16];
	struct files_struct *files;
	struct fs_struct *fs;
	struct signal_struct *signal;
};

/* <= 6.1 with SPLIT_RSS_COUNTING: each thread's counter cache */
struct task_rss_stat {
	int events;
	int count[4];
};

struct task_struct___pre62 {
	struct task_rss_stat rss_stat;
};

/* before 5.14 the state was a long named state */
struct task_struct___pre514 {
	long state;
};

#pragma clang attribute pop

/*
 * Types bpf_helper_defs.h names in its prototypes, declared so that clang
 * sees them at file scope (no "will not be visible outside" warnings).
 */
struct __sk_buff; struct bpf_dynptr; struct bpf_fib_lookup; struct bpf_map;
struct bpf_perf_event_data; struct bpf_perf_event_value; struct bpf_pidns_info;
struct bpf_redir_neigh; struct bpf_sk_lookup; struct bpf_sock;
struct bpf_sock_addr; struct bpf_sock_ops; struct bpf_sock_tuple;
struct bpf_spin_lock; struct bpf_sysctl; struct bpf_tcp_sock; struct bpf_timer;
struct bpf_tunnel_key; struct bpf_xfrm_state; struct btf_ptr; struct cgroup;
struct file; struct in6_addr; struct inode; struct iphdr; struct ipv6_sr_hdr;
struct ipv6hdr; struct linux_binprm; struct mptcp_sock; struct path;
struct perf_branch_entry; struct seq_file; struct sk_buff; struct sk_msg_md;
struct sk_reuseport_md; struct sock; struct sockaddr; struct socket;
struct tcp6_sock; struct tcp_request_sock; struct tcp_sock;
struct tcp_timewait_sock; struct tcphdr; struct udp6_sock; struct unix_sock;
struct vm_area_struct; struct xdp_buff; struct xdp_md;

#endif /* TK_VMLINUX_H */
