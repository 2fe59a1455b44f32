// SPDX-License-Identifier: GPL-2.0
/*
 * ring.c - the bounded record ring between the kprobes and the readers.
 *
 * Handlers run in probe context (preemption, maybe interrupts, disabled), so
 * the ring uses a spinlock taken with irqsave and never sleeps or allocates.
 * A record that does not fit is counted as dropped; nothing ever blocks.
 * Readers are woken through an irq_work: calling wake_up() directly from a
 * kprobe could deadlock if the probed function runs under a scheduler or
 * wait-queue lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/poll.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/vmalloc.h>

#include "toolkit_lkm.h"

struct tk_ring tk_ring;

const char *const tk_event_names[TK_EVENT_MAX + 1] = {
#define TK_EVENT_NAME(name, value, text)	[value] = text,
	TK_EVENT_TYPES(TK_EVENT_NAME)
#undef TK_EVENT_NAME
};

const char *const tk_counter_names[TK_NKINDS] = {
#define TK_COUNTER_NAME(name, index, text)	[index] = text,
	TK_COUNTER_KINDS(TK_COUNTER_NAME)
#undef TK_COUNTER_NAME
};

/* Runs in hard interrupt context (or at the next tick), never in a probe. */
static void tk_ring_wake(struct irq_work *work)
{
	wake_up_interruptible_all(&tk_ring.wq);
}

int tk_ring_init(u32 size)
{
	tk_ring.buf = vzalloc(array_size(size, sizeof(*tk_ring.buf)));
	if (!tk_ring.buf) {
		pr_err("cannot allocate a ring of %u records\n", size);
		return -ENOMEM;
	}
	tk_ring.size = size;
	tk_ring.head = 0;
	tk_ring.tail = 0;
	tk_ring.shutdown = false;
	spin_lock_init(&tk_ring.lock);
	init_waitqueue_head(&tk_ring.wq);
	tk_ring.wake_work = IRQ_WORK_INIT_LAZY(tk_ring_wake);
	return 0;
}

/* Only after the probes are gone and tk_ring_wait_pollers() returned. */
void tk_ring_free(void)
{
	irq_work_sync(&tk_ring.wake_work);
	vfree(tk_ring.buf);
	tk_ring.buf = NULL;
}

/* Probe context: account one event and queue it if it passes the filter. */
void tk_ring_submit(const struct tk_record *rec)
{
	struct tk_event_counters *c = &tk_ring.ev[rec->type];
	u64 uid = READ_ONCE(tk_uid_filter);
	u64 ppid = READ_ONCE(tk_ppid_filter);
	unsigned long flags;
	bool queued = false;

	spin_lock_irqsave(&tk_ring.lock, flags);
	c->n[TK_SEEN]++;
	if (!TK_FILTER_PASSES(uid, rec->uid) ||
	    !TK_FILTER_PASSES(ppid, rec->ppid)) {
		c->n[TK_FILTERED]++;
	} else if (tk_ring.head - tk_ring.tail >= tk_ring.size) {
		c->n[TK_DROPPED]++;
	} else {
		tk_ring.buf[tk_ring.head % tk_ring.size] = *rec;
		tk_ring.head++;
		c->n[TK_DELIVERED]++;
		queued = true;
	}
	spin_unlock_irqrestore(&tk_ring.lock, flags);

	if (queued)
		irq_work_queue(&tk_ring.wake_work);
}

/* Move up to @max records to @out; each record goes to exactly one reader. */
unsigned int tk_ring_dequeue(struct tk_record *out, unsigned int max)
{
	unsigned long flags;
	unsigned int i, n;

	spin_lock_irqsave(&tk_ring.lock, flags);
	n = min_t(u64, tk_ring.head - tk_ring.tail, max);
	for (i = 0; i < n; i++)
		out[i] = tk_ring.buf[(tk_ring.tail + i) % tk_ring.size];
	tk_ring.tail += n;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
	return n;
}

u64 tk_ring_fill(void)
{
	unsigned long flags;
	u64 fill;

	spin_lock_irqsave(&tk_ring.lock, flags);
	fill = tk_ring.head - tk_ring.tail;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
	return fill;
}

void tk_ring_snapshot(struct tk_ring_snap *snap)
{
	unsigned long flags;

	spin_lock_irqsave(&tk_ring.lock, flags);
	memcpy(snap->ev, tk_ring.ev, sizeof(snap->ev));
	snap->cleared = tk_ring.cleared;
	snap->read_lost = tk_ring.read_lost;
	snap->fill = tk_ring.head - tk_ring.tail;
	snap->size = tk_ring.size;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
}

/* Discard the queued records; they count as cleared, not dropped. */
void tk_ring_clear(void)
{
	unsigned long flags;

	spin_lock_irqsave(&tk_ring.lock, flags);
	tk_ring.cleared += tk_ring.head - tk_ring.tail;
	tk_ring.tail = tk_ring.head;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
}

void tk_ring_reset_counters(void)
{
	unsigned long flags;

	spin_lock_irqsave(&tk_ring.lock, flags);
	memset(tk_ring.ev, 0, sizeof(tk_ring.ev));
	tk_ring.cleared = 0;
	tk_ring.read_lost = 0;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
}

void tk_ring_add_read_lost(u64 n)
{
	unsigned long flags;

	if (!n)
		return;
	spin_lock_irqsave(&tk_ring.lock, flags);
	tk_ring.read_lost += n;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
}

/* Module exit: blocked readers return at once from now on. */
void tk_ring_shutdown(void)
{
	unsigned long flags;

	spin_lock_irqsave(&tk_ring.lock, flags);
	tk_ring.shutdown = true;
	spin_unlock_irqrestore(&tk_ring.lock, flags);
	wake_up_interruptible_all(&tk_ring.wq);
}

/*
 * Module exit, after proc_remove(): no file operation of ours can run any
 * more, but poll(2)/select(2) callers and epoll instances may still hold
 * entries on tk_ring.wq, which lives in module memory.  Wake them with
 * POLLFREE (epoll and aio then unhook themselves at once, as for
 * signalfd), wait until poll/select callers have left their syscall and
 * removed their entries, then let an RCU grace period pass, because epoll
 * may still be looking at the queue head under rcu_read_lock().
 * wake_up_pollfree() is not used: it WARNs if a poll/select entry is left.
 */
void tk_ring_wait_pollers(void)
{
	unsigned int waited_ms = 0;

	__wake_up(&tk_ring.wq, TASK_NORMAL, 0,
		  poll_to_key(EPOLLHUP | POLLFREE));
	for (;;) {
		bool empty;

		spin_lock_irq(&tk_ring.wq.lock);
		empty = list_empty(&tk_ring.wq.head);
		spin_unlock_irq(&tk_ring.wq.lock);
		if (empty)
			break;
		if (waited_ms == 1000)
			pr_warn("waiting for pollers of events to leave poll()\n");
		msleep(10);
		waited_ms += 10;
	}
	synchronize_rcu();
}
