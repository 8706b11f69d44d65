"""A parent with worker processes for the attach test; run as ``python workers.py N``.

The parent starts N Python workers (``python workers.py worker``), prints
its own pid and theirs on one line, and then makes one ``Job`` every 50 ms
and drops it. Each worker keeps one ``Job`` every 20 ms (a leak). SIGTERM
ends the parent and its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


class Job:
    def __init__(self) -> None:
        self.payload = bytearray(1024)


if sys.argv[1] == "worker":
    kept = []
    while True:
        kept.append(Job())
        time.sleep(0.02)

workers = [subprocess.Popen([sys.executable, __file__, "worker"]) for _ in range(int(sys.argv[1]))]


def _stop(signum, frame):
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait()
    os._exit(0)


signal.signal(signal.SIGTERM, _stop)
print(os.getpid(), *(w.pid for w in workers), flush=True)
while True:
    Job()
    time.sleep(0.05)
