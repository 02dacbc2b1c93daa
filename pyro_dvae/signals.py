"""Stopping cleanly: SIGINT, SIGTERM and SIGHUP all stop a command the way Ctrl-C does.

Python turns SIGINT into ``KeyboardInterrupt``; schedulers, supervisors and
``timeout`` send SIGTERM, and a closed terminal sends SIGHUP, both of which would
kill the process without a word. :func:`stop_on_signals` raises :class:`Stopped`
(a ``KeyboardInterrupt``) for all three, so the code that saves a resumable
checkpoint on Ctrl-C runs for each. :func:`deferred_stop` holds them until a block
of file writes is done. A signal that the parent set to be ignored (``nohup``; a
background job's SIGINT) stays ignored; SIGTERM is always handled.

Python runs a handler between any two bytecodes, also inside a weakref callback or a
``__del__`` (torch frees tensors through such callbacks all the time, most of all while
it compiles), where the exception it raises is printed and dropped: the stop would be
lost. So inside :func:`stop_on_signals` a dropped :class:`Stopped` is delivered again once
that code has returned.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: the last stop signal :func:`stop_on_signals` turned into :class:`Stopped`: a library
#: that catches the exception and raises a bare ``KeyboardInterrupt`` of its own (Ray's
#: ``ray.wait`` and ``ray.get`` do, from their C++ wait) loses the signal, not this record
_received: list[int] = []


def signal_of(err: BaseException) -> int:
    """The signal behind an interrupt; click wraps one that escapes a command in
    ``click.Abort``, so the causes are searched too. A bare ``KeyboardInterrupt`` is the
    last signal :func:`stop_on_signals` received, or SIGINT if none."""
    while err is not None:
        if hasattr(err, "signum"):
            return err.signum
        err = err.__cause__ or err.__context__
    return _received[-1] if _received else int(signal.SIGINT)


def _handled(sig: int) -> bool:
    return sig == signal.SIGTERM or signal.getsignal(sig) is not signal.SIG_IGN


def _raise(signum, frame) -> None:
    _received.append(int(signum))
    raise Stopped(signum)


#: seconds after a dropped :class:`Stopped` before it is delivered again: time for the
#: callback that dropped it to return, so that the handler runs in the code it interrupted
REDELIVER_AFTER = 0.01


def _redeliver(unraisable, previous_hook) -> None:
    """``sys.unraisablehook``: a :class:`Stopped` raised where Python drops exceptions is
    signalled to the main thread again, shortly (from here its handler would run inside
    this hook, which drops it too); anything else goes to the previous hook."""
    if not isinstance(unraisable.exc_value, Stopped):
        previous_hook(unraisable)
        return
    again = threading.Timer(REDELIVER_AFTER, _thread.interrupt_main, (unraisable.exc_value.signum,))
    again.daemon = True
    again.start()


#: the :func:`stop_on_signals` blocks open now; a nested one shares its outer one's signals
_open: list[None] = []


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped`, also those that
    a weakref callback or a ``__del__`` dropped (see the module)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS if _handled(s)}
    previous_hook = sys.unraisablehook
    if not _open:
        _received.clear()  # a signal of an earlier block is not this one's
    _open.append(None)
    try:
        for sig in previous:
            signal.signal(sig, _raise)
        sys.unraisablehook = lambda unraisable: _redeliver(unraisable, previous_hook)
        yield
    finally:
        sys.unraisablehook = previous_hook
        _open.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def raise_if_stopped() -> None:
    """Raise :class:`Stopped` again for a stop signal received in this block, for a loop that
    is still going after it: Python runs a handler wherever the main thread is, in a weakref
    callback or a ``__del__`` too (torch's compiler runs many), and there it drops the
    handler's exception ("Exception ignored in ..."). :func:`stop_on_signals` delivers such a
    signal again, but 10 ms later, when a short loop may have taken more steps or ended;
    called each turn, this stops the loop at its next one."""
    if _open and _received:
        raise Stopped(_received[-1])


@contextmanager
def deferred_stop(ignore: bool = False) -> Iterator[None]:
    """Hold stop signals until the block is done, then raise :class:`Stopped` (``ignore``:
    drop them, for the clean-up after a stop, where a second signal changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS if _handled(s)}
    try:
        for sig in previous:
            signal.signal(sig, lambda signum, frame: received.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if received and not ignore:
        raise Stopped(received[0])
