"""Running a student's layer safely: fresh copies, NumPy's global generator, a time limit, and
every exception the layer raises turned into that layer's failure.

- **Copies.** Every evaluation starts from a fresh deep copy of the float64 snapshot
  (:func:`fresh`), and NumPy's global generator is reseeded there: a layer that draws its dropout
  mask with ``np.random.rand`` draws the same mask in every copy, exactly like a layer with a
  generator of its own.  :func:`user_rng_kept` puts the caller's global state back afterwards,
  so checking a layer never changes the random numbers the caller draws next.
- **Time limit.** :func:`guarded` arms ``SIGALRM`` (Unix, main thread); when it rings, the
  stack says which method of the layer was running, and :class:`LayerTimeout` carries it
  ("timed out in forward").  It rings again every half second until the checks stop, so a
  layer that swallows one exception does not escape.  Elsewhere (Windows, another thread) there
  is no limit: the command line runs each layer in a child process it can kill instead.
- **Exceptions.** ``SystemExit`` and ``KeyboardInterrupt`` raised *by the layer* are its
  failure like any ``Exception``; a Ctrl-C from the user still stops the run
  (:func:`layer_error`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GLOBAL_SALT = 0x5EED


class LayerTimeout(BaseException):
    """The layer did not return within the time limit; ``phase`` names what was running."""

    def __init__(self, phase, seconds):
        super().__init__(phase, seconds)
        self.phase, self.seconds = phase, seconds

    def detail(self) -> str:
        limit = f"{self.seconds:g} s"
        if self.phase in (None, "deepcopy", "_reconstruct", "_deepcopy_dict"):
            what = "copying the layer" if self.phase else "the checks"
            return (f"timed out while {what} ({limit} time limit): the layer is very slow on "
                    "this x (a smaller x?), or the limit too short (--timeout)")
        return (f"timed out in {self.phase}: no return within {limit} (an endless loop, a "
                "while whose condition never changes, a wait that never ends?)")


_state = {"active": False, "user_interrupt": False, "seconds": None, "on_alarm": None}


def fresh(snapshot, seed: int = 0):
    """A deep copy of ``snapshot``, with NumPy's global generator reseeded for it."""
    layer = copy.deepcopy(snapshot)
    np.random.seed((seed * 7919 + GLOBAL_SALT) % 2 ** 32)
    return layer


@contextlib.contextmanager
def user_rng_kept():
    """Restore NumPy's global generator state on the way out."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def phase_of(frame) -> str | None:
    """The name of the outermost function, below the harness's own code, that ``frame`` is in:
    ``"forward"``, ``"backward"``... (None when the harness itself was running)."""
    entry = None
    while frame is not None:
        if os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == HERE:
            return entry.f_code.co_name if entry is not None else None
        entry, frame = frame, frame.f_back
    return entry.f_code.co_name if entry is not None else None


def on_alarm(callback):
    """Call ``callback(phase)`` each time the alarm rings, before it raises (the command line's
    child process tells its parent where the layer was, in case it must be killed)."""
    _state["on_alarm"] = callback


def _alarm(signum, frame):
    phase = phase_of(frame)
    if _state["on_alarm"] is not None:
        _state["on_alarm"](phase)
    raise LayerTimeout(phase, _state["seconds"])


def _interrupt(signum, frame):
    _state["user_interrupt"] = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def guarded(seconds=None):
    """Run the checks of one layer: :class:`LayerTimeout` raised inside the running code after
    ``seconds`` (None or 0: no limit; only in the main thread of a Unix process), and a Ctrl-C
    told apart from a ``KeyboardInterrupt`` the layer raises.  Nested calls keep the outer one."""
    if _state["active"]:
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    # an alarm someone else armed (a test runner's own time limit) is left alone, and wins
    timer = (bool(seconds) and main and hasattr(signal, "setitimer")
             and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    _state.update(active=True, user_interrupt=False, seconds=seconds)
    old_int = signal.signal(signal.SIGINT, _interrupt) if main else None
    old_alarm = signal.signal(signal.SIGALRM, _alarm) if timer else None
    if timer:
        signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
        if main:
            signal.signal(signal.SIGINT, old_int)
        _state["active"] = False


def layer_error(err: BaseException) -> None:
    """Re-raise ``err`` unless it is the layer's failure to report: a time-out and the user's
    Ctrl-C go on up; any other exception, ``SystemExit`` and a ``KeyboardInterrupt`` the layer
    raised itself included, is the layer's."""
    if isinstance(err, (LayerTimeout, GeneratorExit)):
        raise err
    if isinstance(err, KeyboardInterrupt) and _state["user_interrupt"]:
        raise err


def error_kind(err: BaseException) -> str:
    """A few words for exceptions that are not errors in the usual sense."""
    if isinstance(err, SystemExit):
        return (" (the layer called sys.exit / raised SystemExit: a layer must never end the "
                "program)")
    if isinstance(err, KeyboardInterrupt):
        return " (raised by the layer itself)"
    return ""
