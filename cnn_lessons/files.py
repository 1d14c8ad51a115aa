"""Writing files so that nothing is ever half-written, and nothing is left behind.

Every file the project writes (models, figures, metrics, notebooks, the MNIST sample) goes
through :func:`atomic_write`: the data goes to a temporary file in the same folder, which is
renamed over the target only once it is complete.  A crash, a full disk, Ctrl-C or a ``kill``
(SIGTERM, SIGHUP) midway leaves the old file (or no file) in place, never a truncated one, and
the temporary file is removed.  Only ``kill -9`` (SIGKILL) cannot be caught: the temporary file
it leaves is named after the dead process (``.model.npz.<pid>.<random>.tmp``), and the next write
into that folder removes it (:func:`remove_stale`).  Downloads use the same names
(:func:`temp_file`).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import signal
import tempfile
import threading
import time

#: Signals turned into ``SystemExit`` while a file is being written, so that cleanup runs
#: (SIGINT already raises ``KeyboardInterrupt``).
SIGNALS = ("SIGTERM", "SIGHUP")


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)     # the exit status a shell reports for a killed process


@contextlib.contextmanager
def signals_raise():
    """``with signals_raise(): ...`` -- inside, SIGTERM and SIGHUP raise ``SystemExit`` (so
    ``finally`` blocks run) instead of killing the process on the spot.  Only in the main thread
    and for signals whose handler is the default one; the handlers are restored afterwards."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
                previous[sig] = signal.signal(sig, _raise_exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cleans_up_on_signals(function):
    """Decorator: run ``function`` inside :func:`signals_raise`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with signals_raise():
            return function(*args, **kwargs)
    return wrapper


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


STALE_AFTER = 60.0
"""Seconds a temporary file of a dead process must have gone unmodified before it is removed:
a process of another container sharing the folder may carry the same number and be alive."""


def remove_stale(folder, prefix: str, suffix: str) -> list[str]:
    """Remove the temporary files ``<prefix><pid>.*<suffix>`` in ``folder`` whose process is
    gone (killed while it wrote) and that nobody touched for :data:`STALE_AFTER` seconds;
    returns their paths.  A running writer's file is kept."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(os.fspath(folder)),
                                       f"{glob.escape(prefix)}*{suffix}")):
        pid = os.path.basename(path)[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.path.getmtime(path) > STALE_AFTER:
                    os.remove(path)
                    removed.append(path)
    return removed


def temp_file(folder, prefix: str, suffix: str) -> tuple[int, str]:
    """``(fd, path)`` of a new temporary file ``<prefix><pid>.<random><suffix>`` in ``folder``,
    named after this process; stale ones of dead processes are removed first."""
    remove_stale(folder, prefix, suffix)
    return tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=folder)


def check_writable(path, what: str) -> str:
    """Refuse, before any work, a ``path`` that cannot be written: a folder, a file inside a
    regular file, a folder without write permission.  ``what`` (e.g. ``"--out"``) names it in
    the message.  Nothing is created; returns the path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OSError(f"{what} {path}: is a folder, expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):          # missing folders are created when writing
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OSError(f"{what} {path}: {existing} is a file, not a folder")
    try:                                          # permissions alone do not say it (root, NFS)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OSError(f"{what} {path}: cannot write into {existing} ({err.strerror})") from None
    return path


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_args):
    """``with atomic_write("model.npz") as f: ...`` -- write ``f``; on success it replaces
    ``path``, on an error or a caught signal it is removed and ``path`` is untouched.  Missing
    folders are created.  The file gets the usual permissions of a new file (``0666`` less the
    umask).  An error names ``path``, never the temporary file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = temp_file(folder, f".{os.path.basename(path)}.", ".tmp")
    except OSError as err:
        raise _naming(err, path) from None
    with signals_raise():
        try:
            with os.fdopen(fd, mode, **open_args) as f:
                yield f
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes files private; ours are not
            os.replace(tmp, path)
        except OSError as err:
            _remove(tmp)
            raise _naming(err, path) from None
        except BaseException:
            _remove(tmp)
            raise


def _naming(err: OSError, path) -> OSError:
    """``err`` as an OSError (same errno) whose message names ``path``."""
    out = OSError(f"cannot write {path}: {err.strerror or err}")
    out.errno = err.errno
    return out


def _remove(tmp):
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
