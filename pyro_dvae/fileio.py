"""Files that cannot be left half-written, and folders that one process writes at a time.

Writes go to a temporary file in the same folder, are flushed to disk and renamed
over the target, so a reader sees the old file or the new one, never a mix (but for
:func:`overwrite_in_place`, a full disk's last resort, which needs no new space).
:class:`FolderLock` is an OS file lock (``flock``): the kernel releases it when its
process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import LockError, StorageError

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not locked there
    fcntl = None

LOCK = ".lock"
TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    An ``OSError`` (disk full, read-only folder, permissions) leaves ``path`` as it
    was, removes the temporary and is raised as :class:`StorageError`.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the mode open() would
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = os_error_in(err) if isinstance(err, Exception) else None
        if cause is not None:
            raise StorageError(f"cannot write {path}: {cause.strerror or cause}") from None
        raise


def os_error_in(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err``, if any: ``torch.save`` on a full disk raises a
    ``RuntimeError`` of its zip writer while handling the ``OSError`` of the write."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def append_text(path: Path, text: str) -> None:
    """Append ``text``; an ``OSError`` becomes :class:`StorageError`."""
    try:
        with open(path, "a") as fh:
            fh.write(text)
            fh.flush()
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror or err}") from None


def overwrite_in_place(path: Path, text: str) -> None:
    """Write ``text`` over ``path``'s own bytes, padded with spaces to the file's length: one
    write that needs no new space, for the last word of a command on a full disk, where
    :func:`atomic_write_text` cannot make its temporary. Not atomic; a text longer than the
    file, or a write that fails, is :class:`StorageError`."""
    body = text.rstrip("\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            if len(body) + 1 > size:
                raise StorageError(f"cannot write {path} in place: it has {size} bytes")
            data = body + b" " * (size - len(body) - 1) + b"\n"  # JSON allows the spaces
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], done)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror or err}") from None


def is_scratch(name: str) -> bool:
    """A lock file, or a temporary of an interrupted write: not a run's data."""
    return name == LOCK or (name.startswith(".") and name.endswith(TMP_SUFFIX))


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries :func:`atomic_write` left in ``folder`` when it was killed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def first_line(err: BaseException) -> str:
    """One line for an error whose text may run to many (torch's ``load_state_dict``)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        more = len(lines) - 2
        return lines[1] + (f" (and {more} more)" if more else "")
    return lines[0]


def _whoami() -> str:
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("__main__.py", "pyro-dvae"):  # `python -m pyro_dvae` is the command line too
        prog = "pyro-dvae"
    return f"process {os.getpid()} ({' '.join([prog, *sys.argv[1:]])})"


class FolderLock:
    """An exclusive lock on ``folder`` (its ``.lock`` file), for one writer at a time.

    Use as a context manager. A second holder gets :class:`LockError` naming the
    process that holds the lock. Within one process the lock is not re-entrant.

    A command that fails (an exception leaves the ``with``) removes the lock file if it
    made it, so that a refused command leaves the folder as it found it. The file is
    removed while it is still locked, and :meth:`acquire` checks, once it holds the lock,
    that the file it locked is still the one at ``.lock``: a process that opened the old
    file before it was removed, and locks it after, finds it gone and starts over on a
    new one, instead of holding a lock that nobody else can see.
    """

    def __init__(self, folder: str | Path, what: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.what = what or str(self.folder)
        self._fd: int | None = None
        self._created = False  # this process made the lock file it holds

    def holder(self) -> str | None:
        """Who holds the lock now (``None`` if nobody does)."""
        if fcntl is None or not self.path.is_file():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.path.read_text(errors="replace").strip() or "another process"
        finally:
            os.close(fd)  # closing drops the probe's shared lock
        return None

    def _open(self) -> tuple[int, bool]:
        """The lock file, opened for writing, and whether this call created it."""
        for _ in range(100):  # each turn lost to a creator or a remover: try again
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                pass
            try:
                return os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                pass  # removed in between (or a link to nowhere)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), False

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is the file at ``.lock`` now (not one a failed holder removed)."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: as before removal existed
        held = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    def acquire(self) -> FolderLock:
        if fcntl is None or self._fd is not None:
            return self
        attempt = stale = 0
        while True:
            try:
                fd, created = self._open()
            except OSError as err:
                raise StorageError(f"cannot lock {self.what}: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                attempt += 1  # a holder() probe holds a shared lock for an instant
                if attempt == 5:
                    holder = self.holder() or "another process"
                    raise LockError(f"{self.what} is in use by {holder}") from None
                time.sleep(0.05)
                continue
            if self._is_current(fd):
                break
            os.close(fd)  # locked a file its holder removed as it gave up: open the new one
            stale += 1
            if stale == 100:
                raise StorageError(f"cannot lock {self.what}: its {LOCK} file keeps changing")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (_whoami() + "\n").encode())
        except OSError:
            pass  # the lock holds without the note of who holds it
        self._fd, self._created = fd, created
        return self

    def release(self, discard: bool = False) -> None:
        """Unlock. ``discard``: the command failed; remove the lock file if this process
        made it (and it is still the file at ``.lock``), before unlocking it."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            removed = False
            if discard and self._created and self._is_current(fd):
                try:
                    self.path.unlink()
                    removed = True
                except OSError:
                    pass
            if not removed:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            os.close(fd)  # releases the flock
            self._created = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type, *exc) -> None:
        self.release(discard=exc_type is not None)
