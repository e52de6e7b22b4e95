"""Measuring a command as the OS sees it: wall time from launch to exit, CPU time, and peak RSS
(exact for the process from `wait4`, polled for its whole process tree). Shared by the benchmarks
that compare whole runs (scale.py, finetune_vs_transformers.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time


class PeakRss:
    """Peak RSS of a process tree by polling /proc every 0.1 s: of its largest process, and of
    all its processes together."""

    def __init__(self, pid: int):
        self.pid, self.largest, self.total, self._stop = pid, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _tree(self, pid: int) -> list[int]:
        out = [pid]
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    for child in f.read().split():
                        out += self._tree(int(child))
        except OSError:
            pass
        return out

    def _poll(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.1):
            sizes = []
            for pid in self._tree(self.pid):
                try:
                    with open(f"/proc/{pid}/statm") as f:
                        sizes.append(int(f.read().split()[1]) * page)
                except OSError:
                    pass
            self.largest = max([self.largest, *sizes])
            self.total = max(self.total, sum(sizes))

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.largest, self.total


def run(argv: list[str], env: dict | None = None, until=None) -> dict:
    """Run `argv` to its end: wall seconds, CPU seconds, the time `until()` first held, peak RSS
    in MB (largest process: exact, from the kernel's accounting of this child and the children it
    waited for; all processes together: polled), and its stdout. Raises SystemExit on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        tree = PeakRss(proc.pid)
        first = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if until is not None and first is None and until():
                first = time.perf_counter() - start
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        largest, total = tree.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{stderr[-3000:]}")
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "first": first,
        "peak_rss_largest_mb": max(usage.ru_maxrss / 1024, largest / 2**20),  # ru_maxrss: KiB
        "peak_rss_tree_mb": total / 2**20,
        "stdout": stdout,
    }
