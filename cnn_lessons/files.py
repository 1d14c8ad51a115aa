"""Writing files so that nothing is ever half-written.

Every file the project writes (models, figures, metrics, notebooks, the MNIST sample) goes
through :func:`atomic_write`: the data goes to a temporary file in the same folder, which is
renamed over the target only once it is complete.  A crash, a full disk or Ctrl-C midway leaves
the old file (or no file) in place, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_args):
    """``with atomic_write("model.npz") as f: ...`` -- write ``f``; on success it replaces
    ``path``, on an error it is removed and ``path`` is untouched.  Missing folders are
    created.  The file gets the usual permissions of a new file (``0666`` less the umask)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes files private; ours are not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
