"""DataLoader worker processes that never outlive the process that started them.

A SIGKILLed parent (the OOM killer, ``kill -9``) runs no clean-up, so its forked DataLoader workers
would live on as orphans, holding whatever they inherited (memory, file descriptors). Every loader of
the project (index building, training, evaluation) passes :class:`WorkerInit` as its
``worker_init_fn``: each worker asks the kernel to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``), then checks that the parent is still the one that created it, because the
parent may have died before the request took effect. Signals sent to the whole process group are left to the
parent (:func:`leave_group_signals_to_parent`).

The death signal follows the parent *thread* that forked the worker: iterate loaders from a thread
that outlives the iteration (the main thread does, in every caller here).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or taskset's share, not the host's
    count); the default number of data workers."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity call on this platform (macOS, Windows)
        return os.cpu_count() or 1


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies; exit now if ``parent_pid`` is already gone.

    Returns False where the platform has no such request (not Linux): the caller lives on unprotected."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died between fork and prctl: we were re-parented already
        os._exit(1)
    return True


def leave_group_signals_to_parent() -> None:
    """Move this worker into a process group of its own: a signal sent to the parent's whole group (Ctrl-C in a
    terminal, ``timeout``, a scheduler's kill) is then the parent's alone to handle; it saves where it stands and
    shuts its workers down. A worker killed by the signal first made the loader raise "worker killed by signal" in
    the parent instead, and a training run lose its epoch's steps. The worker keeps torch's own handlers, so the
    loader can still stop a stuck one (ignoring SIGTERM instead left it running and the parent waiting at exit).
    Only with PR_SET_PDEATHSIG: the kernel still ends the worker with its parent."""
    with contextlib.suppress(OSError):  # not allowed (a session leader): the worker stays in the parent's group
        os.setpgid(0, 0)


class WorkerInit:
    """A picklable DataLoader ``worker_init_fn``: die with the parent, then run ``then(worker_id)``.

    Create it in the process that iterates the loader (it records that process's id)."""

    def __init__(self, then: Callable[[int], None] | None = None) -> None:
        self.parent_pid = os.getpid()
        self.then = then

    def __call__(self, worker_id: int) -> None:
        if die_with_parent(self.parent_pid):
            leave_group_signals_to_parent()
        if self.then is not None:
            self.then(worker_id)
