"""Where and how a submission's kernel runs: a private folder, resource limits, bubblewrap.

:func:`kernel_command` gives the command line of one grading kernel.  The kernel always starts
from :mod:`checks.grade_launch` (resource limits, killed with its grader) in a private folder
that holds only a copy of the submission, with a minimal environment (no variable of the
teacher's).  When bubblewrap (``bwrap``) is installed and works, the kernel runs inside it:

- the system (``/usr`` and the few files of ``/etc`` that programs need), Python and the two
  packages read-only, nothing else of the machine: not the rest of the teacher's home, not the
  class folder, not the other submissions;
- its own PID namespace (it cannot see or signal the grader or any other process), no network,
  a private ``/tmp`` and ``/dev``, a new session (no terminal to write into);
- the submission's private folder as its home and working directory, writable;
- the kernel's sockets (Unix sockets, the only way in or out) in a folder of their own.

Without bubblewrap (``--no-sandbox``, ``CHECKS_GRADE_SANDBOX=off``, or not installed) the kernel
still gets the private folder, the limits and the minimal environment, but it runs as the
teacher, next to the teacher's files and processes: fine for a student checking their own
notebook, not for a class.  Every report says which of the two it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).resolve().with_name("grade_launch.py")
HOME = "/home/student"          # the submission's folder, as the sandboxed kernel sees it

_sandbox_works: dict[str, bool] = {}


@dataclass
class Limits:
    """Resource limits of one kernel (0: no limit)."""

    memory_mb: int = 2048
    cpu_seconds: int = 900
    processes: int = 64
    file_mb: int = 64

    def as_launch_json(self) -> str:
        return json.dumps({"memory": self.memory_mb * 2**20, "cpu": self.cpu_seconds,
                           "procs": self.processes, "fsize": self.file_mb * 2**20})


def sandbox_wanted(flag: bool | None = None) -> bool:
    """``flag`` when given (``--sandbox``/``--no-sandbox``), else the environment variable
    ``CHECKS_GRADE_SANDBOX`` (``off`` disables bubblewrap), else True."""
    if flag is not None:
        return flag
    return os.environ.get("CHECKS_GRADE_SANDBOX", "auto").lower() not in ("off", "0", "no")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def sandbox_available() -> bool:
    """Does bubblewrap run here (installed, and user namespaces allowed)?"""
    path = bwrap_path()
    if path is None:
        return False
    if path not in _sandbox_works:
        try:
            result = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent",
                                     "--proc", "/proc", "--dev", "/dev", "--", "true"],
                                    capture_output=True, timeout=20)
            _sandbox_works[path] = result.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _sandbox_works[path] = False
    return _sandbox_works[path]


def _package_dirs() -> list[Path]:
    """The folders the kernel must read: Python, its environment, the two packages."""
    import checks
    import cnn_lessons

    dirs = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent,
            Path(cnn_lessons.__file__).resolve().parent, Path(checks.__file__).resolve().parent}
    for entry in sys.path:                 # site-packages and the like, never the cwd
        if entry and os.path.isdir(entry) and ("site-packages" in entry
                                                or entry.startswith(sys.base_prefix)):
            dirs.add(Path(entry).resolve())
    return sorted(dirs)


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Of /etc only what programs need to start (no secrets: the kernel may run as root inside).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
             "nsswitch.conf", "hosts", "alternatives", "fonts", "mime.types")


def kernel_environment(work: Path, sandboxed: bool) -> dict[str, str]:
    """The kernel's whole environment: nothing of the teacher's but the data folder."""
    home = HOME if sandboxed else str(work)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    data = os.environ.get("CNN_LESSONS_DATA")
    if data and os.path.isdir(data):
        env["CNN_LESSONS_DATA"] = str(Path(data).resolve())
    return env


def matplotlib_font_list() -> dict[str, str]:
    """matplotlib's font list, built once by the grader in a kernel's environment:
    ``{file name: text}`` (empty when matplotlib is missing or fails).

    A kernel's matplotlib folder starts empty, and its first ``import matplotlib.pyplot`` would
    scan the system's fonts to rebuild this list, a fifth of a second in every submission; a
    copy of it in each submission's folder spares that.  It names only fonts the sandbox can
    read (the system's and matplotlib's own: ``HOME`` here is an empty folder).
    """
    with tempfile.TemporaryDirectory(prefix="checks-fonts-") as scratch:
        try:
            subprocess.run([sys.executable, "-I", "-c", "import matplotlib.font_manager"],
                           env=kernel_environment(Path(scratch), False), cwd=scratch,
                           capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        return {path.name: path.read_text(encoding="utf-8")
                for path in Path(scratch, ".matplotlib").glob("fontlist-*.json")}


def kernel_command(work: Path, connection_dir: Path, limits: Limits, sandboxed: bool) -> list[str]:
    """The command line of a kernel for the submission copied into ``work``; its connection
    file and sockets go into ``connection_dir``."""
    python = [sys.executable, "-I", "-m", "ipykernel_launcher", "-f", "{connection_file}",
              "--HistoryManager.hist_file=:memory:"]
    launch = [sys.executable, "-I", "-S", str(LAUNCHER), limits.as_launch_json(), "--"]
    if not sandboxed:
        return launch + python
    env = kernel_environment(work, True)
    box = [bwrap_path(), "--unshare-all", "--die-with-parent", "--new-session",
           "--clearenv", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for system in SYSTEM_DIRS:
        if os.path.exists(system):
            box += ["--ro-bind", system, system]
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            box += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for folder in _package_dirs():
        box += ["--ro-bind", str(folder), str(folder)]
    data = env.get("CNN_LESSONS_DATA")
    if data:
        box += ["--ro-bind", data, data]
    box += ["--bind", str(work), HOME, "--bind", str(connection_dir), str(connection_dir),
            "--chdir", HOME]
    for key, value in env.items():
        box += ["--setenv", key, value]
    # -I: the kernel's Python ignores PYTHON* variables and the working directory on sys.path
    return launch + box + ["--"] + python


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (from /proc; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def become_subreaper() -> bool:
    """Adopt every orphan of our descendants (Linux), so that a process that double-forks out
    of the kernel's process group is still found and killed afterwards."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0          # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def kill_everything_below(pid: int) -> int:
    """SIGKILL every descendant of ``pid`` (repeatedly: a dying process may fork); the number."""
    import signal

    killed = 0
    for _ in range(20):
        below = descendants(pid)
        if not below:
            break
        for child in below:
            try:
                os.kill(child, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        reap_children()
    return killed


def reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
