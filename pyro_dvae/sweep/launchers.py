"""How a sweep's commands run: the seam between planning a sweep and running it.

:mod:`.run` plans the runs, names them, decides what each needs (new, resume,
evaluate), counts outcomes and isolates failures; a launcher only runs one command
of a job at a time and says when it ended. :class:`LocalLauncher` starts child
processes on this machine; a launcher for a cluster does the same through its
scheduler. A command is a ``pyro-dvae`` argument list whose output goes to the
job's log, which the sweep has opened and headed.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from ..signals import Stopped, deferred_stop, raise_if_stopped, stop_on_signals

#: seconds a stopped run is given to write its checkpoint before it is killed
STOP_GRACE = 120.0


class Launcher:
    """Runs one command at a time per job; subclasses set ``name`` and the three methods."""

    name: ClassVar[str]

    def start(self, cmd: list[str], log_path: Path) -> Any:
        """Start ``cmd`` (output appended to ``log_path``); a handle for :meth:`poll`."""
        raise NotImplementedError

    def poll(self, handle: Any) -> int | None:
        """The command's exit status, or None while it runs."""
        raise NotImplementedError

    def stop(self, handles: list[Any], grace: float = STOP_GRACE) -> None:
        """Stop every running command at a resumable checkpoint and wait for it."""
        raise NotImplementedError

    def open(self) -> None:
        """Connect to where the runs go; the sweep calls it once it holds its folder's lock."""

    def close(self) -> None:
        """Release what the launcher holds (nothing is left running)."""

    def check_storage(self, sweep_dir: Path) -> None:
        """Raise :class:`~pyro_dvae.errors.ConfigError` if the runs cannot reach the folder."""

    def slots(self) -> int | None:
        """How many runs fit at once where this launcher runs them (None: ask ``--jobs``)."""
        return None

    def where(self, handle: Any) -> str:
        """Where a finished command ran, for the sweep's log ("" where it is this machine)."""
        return ""


class LocalLauncher(Launcher):
    """Child processes on this machine, each in its own session, stopped by SIGTERM."""

    name = "local"

    def start(self, cmd: list[str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "a") as log:
            return _spawn(cmd, log)

    def poll(self, handle: subprocess.Popen) -> int | None:
        return handle.poll()

    def stop(self, handles: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
        """SIGTERM to every run (each saves a resumable checkpoint and exits), then wait."""
        with deferred_stop(ignore=True):
            for proc in handles:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in handles:
            while True:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    break
                except subprocess.TimeoutExpired:
                    proc.kill()  # past the grace period: its last checkpoint stands
                except Stopped:
                    continue  # a second signal while waiting: keep waiting for the runs


def _spawn(cmd: list[str], log) -> subprocess.Popen:
    """``cmd`` as a child process writing to ``log``, in its own session (a terminal's Ctrl-C
    reaches the sweep, which stops each run once), stopped if its parent dies (Linux)."""
    return subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=functools.partial(_die_with_parent, os.getpid())
        if sys.platform.startswith("linux")
        else None,
    )


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: Linux sends it SIGTERM if the sweep dies (even by SIGKILL).

    A sweep killed between the fork and this call sends nothing, so the child checks
    that its parent is still the sweep, and exits at once if it is not.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: a sweep killed by SIGKILL leaves its runs going
    if os.getppid() != parent:
        os._exit(143)


class RayLauncher(Launcher):
    """Each command one Ray task, scheduled where ``cpus_per_run`` CPUs (and
    ``gpus_per_run`` GPUs) are free. Without ``address`` (or ``RAY_ADDRESS``) Ray starts a
    local cluster of this machine's cores; with it, this joins an existing one, once the
    sweep holds its folder (:meth:`open`). A driver already connected (``ray.init`` in the
    caller) is used as it is.

    The task starts the command as a child process of the worker, with the worker's Python,
    output appended to the log in the sweep folder (which every node must see: see
    :meth:`check_storage`); cancelling the task (Ctrl-C or SIGTERM to the sweep) sends the
    child SIGTERM, so the run stops at a resumable checkpoint.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run=0.0):
        from ..errors import ConfigError

        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--backend ray needs Ray: pip install 'pyro-dvae[ray]' (or pip install ray)"
            ) from None
        self.ray, self.address = ray, address
        self.cpus, self.gpus = cpus_per_run, gpus_per_run
        self.owned = False  # whether this launcher started the Ray connection it closes
        self.nodes: dict[str, str] = {}  # task → the node it ran on
        self.task = ray.remote(_run_command).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0
        )

    def open(self) -> None:
        from ..errors import ConfigError

        ray = self.ray
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            self.owned = True
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise ConfigError(f"cannot start or join {where}: {err}") from None
        finally:  # ray.init installs its own; a stop signal must stop the runs cleanly
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def slots(self) -> int:
        """Runs that fit in the cluster at once, by its CPUs (and GPUs, if runs take them)."""
        have = self.ray.cluster_resources()
        fits = [int(have.get("CPU", 0) // self.cpus)] if self.cpus else []
        if self.gpus:
            fits.append(int(have.get("GPU", 0) // self.gpus))
        return max(1, min(fits, default=1))

    def start(self, cmd: list[str], log_path: Path) -> tuple[Any, Path]:
        return self.task.remote(cmd, str(log_path)), log_path

    def poll(self, handle: tuple[Any, Path]) -> int | None:
        ray, (ref, log_path) = self.ray, handle
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            rc, self.nodes[ref.hex()] = ray.get(ref)
            return int(rc)
        except ray.exceptions.TaskCancelledError:
            return 128 + signal.SIGTERM
        except ray.exceptions.RayError as err:  # the worker died, the node was lost, ...
            with open(log_path, "a") as log:
                log.write(f"Error: the Ray task stopped: {_cause(err)}\n")
            return 1

    def where(self, handle: tuple[Any, Path]) -> str:
        node = self.nodes.get(handle[0].hex())
        return f"node {node[:12]}" if node else ""

    def stop(self, handles: list[tuple[Any, Path]], grace: float = STOP_GRACE) -> None:
        """Cancel every task (each sends its run SIGTERM and waits for it), then wait.

        A second signal meanwhile changes nothing: it is dropped before Ray sees it, as
        Ray's wait raises a bare ``KeyboardInterrupt`` for it that nothing here could tell
        from any other, and leaving on it would end the sweep, and with it (Ray ends a job's
        workers and their children) the runs still writing their last summary."""
        ray, refs = self.ray, [ref for ref, _ in handles]
        with deferred_stop(ignore=True):
            for ref in refs:
                ray.cancel(ref, force=False)
            deadline = time.monotonic() + grace
            for ref in refs:
                ready, _ = ray.wait([ref], timeout=max(0.1, deadline - time.monotonic()))
                if not ready:
                    ray.cancel(ref, force=True)  # past the grace: its last checkpoint stands

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()

    def check_storage(self, sweep_dir: Path) -> None:
        """From every live node, read a file the driver has just written in the sweep folder."""
        import uuid

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from ..errors import ConfigError

        ray, token = self.ray, uuid.uuid4().hex
        probe = sweep_dir.resolve() / f".storage-{token}"
        probe.write_text(token)
        try:
            see, refs = ray.remote(_sees), []
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            refs = [
                see.options(
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                ).remote(str(probe), token)
                for n in nodes
            ]
            seen = ray.get(refs, timeout=120)
        except (ray.exceptions.RayError, TimeoutError) as err:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise ConfigError(
                f"cannot check that every Ray node sees {sweep_dir}: {_cause(err)}"
            ) from None
        finally:
            probe.unlink(missing_ok=True)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
        if blind:
            raise ConfigError(
                f"the sweep folder {sweep_dir} is not visible from the Ray node(s) "
                f"{', '.join(blind)}: put it on storage every node mounts at the same path"
            )


def _cause(err: BaseException) -> str:
    """What a Ray error is about, in one line: the task's own exception where there is one."""
    from ..fileio import first_line

    cause = getattr(err, "cause", None) or err
    text = first_line(cause)
    return text if text == type(cause).__name__ else f"{type(cause).__name__}: {text}"


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def _run_command(cmd: list[str], log_path: str) -> tuple[int, str]:
    """In a Ray worker: run ``cmd`` with this worker's Python; SIGTERM to it if cancelled,
    and the task ends only once the run has: a cancel that comes while the run is being
    started stops it once started, and one that comes again while it stops changes nothing.
    Returns its exit status and the node it ran on."""
    import ray

    cmd = [sys.executable, *cmd[1:]]  # the driver's interpreter path may not exist here
    node = ray.get_runtime_context().get_node_id()
    proc = None
    try:
        with stop_on_signals():  # ray.cancel interrupts the main thread as SIGINT would
            with open(log_path, "a") as log:
                log.write(f"(Ray task on node {node})\n")
                log.flush()
                with deferred_stop():
                    proc = _spawn(cmd, log)
            while proc.poll() is None:
                raise_if_stopped()  # a cancel whose interrupt a finalizer dropped
                time.sleep(0.2)
    except KeyboardInterrupt:  # ray.cancel: the run stops at a resumable checkpoint
        if proc is None:
            raise
        _stop_and_wait(proc)
        raise
    return proc.returncode, node


def _stop_and_wait(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM to a run, then wait for it to save and exit, whatever interrupts come in
    the meantime; past ``grace``, kill it (its last checkpoint stands)."""
    with deferred_stop(ignore=True):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: the sweep's ``--backend`` choices
LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "ray": RayLauncher}
