"""Start a grading kernel under resource limits: ``python -I -S grade_launch.py LIMITS -- CMD...``.

Run as a script (not imported from the package, so that it starts in milliseconds and trusts
nothing on ``sys.path``).  ``LIMITS`` is a JSON object ``{"memory": bytes, "cpu": seconds,
"procs": count, "fsize": bytes}``; each limit is set as a hard and soft rlimit, then the parent
death signal is armed (the kernel dies with the process that grades it) and ``CMD`` replaces
this process: ``bwrap ... python -m ipykernel_launcher ...`` or the kernel itself.

Limits, inherited by every process the kernel starts:

- ``memory``: address space (``RLIMIT_AS``): a big allocation raises ``MemoryError``;
- ``cpu``: processor seconds (``RLIMIT_CPU``): past it the kernel is killed (``SIGXCPU``);
- ``procs``: processes of this user besides those already running (``RLIMIT_NPROC``; Linux does
  not apply it to root, the grader's own watchdog then counts the kernel's processes);
- ``fsize``: the largest file the kernel can write (``RLIMIT_FSIZE``).
"""

import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1


def processes_of_this_user() -> int:
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        print("usage: grade_launch.py LIMITS -- CMD...", file=sys.stderr)
        return 2
    limits = json.loads(argv[0])
    command = argv[2:]
    for key, rlimit in (("memory", resource.RLIMIT_AS), ("cpu", resource.RLIMIT_CPU),
                        ("fsize", resource.RLIMIT_FSIZE)):
        if limits.get(key):
            value = int(limits[key])
            # processor time: SIGXCPU at the limit (its name says why), SIGKILL 2 s later
            resource.setrlimit(rlimit, (value, value + 2 if key == "cpu" else value))
    if limits.get("procs"):
        value = processes_of_this_user() + int(limits["procs"])
        resource.setrlimit(resource.RLIMIT_NPROC, (value, value))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:                  # the grader is already gone
        return 1
    os.execvp(command[0], command)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
