"""Helpers the bench scripts share: a free 127.0.0.1 port, a process's RSS, and a wait
until a process has gone quiet."""

import os
import socket
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    """User + system CPU time of `pid` so far, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(pid, limit=15.0):
    """Waits (at most `limit` seconds) until `pid` used under 2% of a core over 0.5 s:
    work a server does after a run (PocketBase writes its request log in the
    background) must not land in the next server's run."""
    tick = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + limit
    before = cpu_ticks(pid)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = cpu_ticks(pid)
        if (now - before) / tick < 0.01:
            return
        before = now
