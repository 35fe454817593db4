"""A launched process lives no longer than the process that launched it.

The launcher process asks the kernel for a signal when its parent dies
(:func:`die_with_parent`: ``PR_SET_PDEATHSIG`` on Linux, a watchdog elsewhere); a worker,
which torch's elastic agent starts in a session of its own, watches its parent and the
original caller itself (:func:`watch_parent`). The caller ends the launcher's process
group (:func:`end_group`): SIGTERM, then SIGKILL for what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

#: The pid of the process that called :func:`~activeit.models.processes.launch`, in the
#: environment of the launcher and of every worker.
CALLER_PID_ENV = "ACTIVEIT_LAUNCH_CALLER"
#: How often a watchdog looks at its parent, in seconds.
POLL_S = 0.5
#: How long an ended process group has between SIGTERM and SIGKILL, in seconds.
GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def caller_pid() -> int | None:
    """The launching caller's pid from the environment; None outside a launch."""
    value = os.environ.get(CALLER_PID_ENV, "")
    return int(value) if value.isdigit() else None


def watch_parent(on_gone: Callable[[], None], caller: int | None = None) -> None:
    """Call ``on_gone`` (in a daemon thread) as soon as this process's parent dies or, when
    given, ``caller`` does: the parent pid changes when the parent dies (the orphan is
    re-parented), even when it died before this call (then ``caller`` is gone too)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and (caller is None or alive(caller)):
            time.sleep(POLL_S)
        on_gone()

    threading.Thread(target=watch, name="activeit-watch-parent", daemon=True).start()


def exit_now(why: str) -> Callable[[], None]:
    """An ``on_gone`` that ends this process at once with one line saying ``why``."""
    def gone() -> None:
        print(f"error: {why}; stopping", file=sys.stderr, flush=True)
        os._exit(1)

    return gone


def die_with_parent(caller: int) -> None:
    """Have this process receive SIGTERM when its parent (the ``caller``) dies: the kernel's
    parent-death signal on Linux, a watchdog elsewhere; already dead: SIGTERM now."""
    terminate = lambda: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux
        watch_parent(terminate, caller)
    if os.getppid() != caller:  # the parent died before the signal was asked for
        terminate()


def wait_unreaped(pid: int, timeout_s: float | None = None) -> bool:
    """Wait until the child ``pid`` has exited, leaving it unreaped (so that its process
    group id cannot be taken by another process yet); False when ``timeout_s`` passed first."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def end_group(leader: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> int:
    """End the process group that the child ``leader`` leads (started with
    ``start_new_session``): SIGTERM while it runs, SIGKILL after ``grace_s`` and for
    whatever of its group is left; returns its exit code."""
    if not wait_unreaped(leader.pid, 0):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGTERM)
        wait_unreaped(leader.pid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    return leader.wait()
