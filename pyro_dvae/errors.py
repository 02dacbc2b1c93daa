"""Errors a user can act on; the CLI prints each as one line."""


class PyroDvaeError(Exception):
    """Base class: a problem with the user's input or environment."""

    exit_code = 1


class ConfigError(PyroDvaeError):
    """An invalid option or combination of options."""

    exit_code = 2


class DataError(PyroDvaeError):
    """Data that cannot be found, downloaded or read."""


class RunDirError(PyroDvaeError):
    """A run directory that cannot be created, resumed or read."""

    exit_code = 2


class TrainingError(PyroDvaeError):
    """Training that had to stop (for example a NaN loss)."""


class StorageError(PyroDvaeError):
    """A file that cannot be written (disk full, read-only folder, permissions)."""


class LockError(PyroDvaeError):
    """A run or sweep folder that another process is writing."""
