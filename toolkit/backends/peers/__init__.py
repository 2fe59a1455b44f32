"""The tools users run instead of the toolkit, as collectors: auditd, bpftrace, forkstat
and BCC's execsnoop/exitsnoop. Each runs as its users run it, as a subprocess (or a
private daemon), and its own output is parsed into the common records; see
docs/peers.md."""
