"""Cell locks: one process at a time works in a run folder, across processes and hosts.

A lock is a small JSON file beside the run folder (``<run_dir>.lock``), created with
``O_CREAT | O_EXCL`` so that exactly one claimant makes it. It names its owner (user, host,
pid, start time, command line); the owner refreshes its modification time every
:data:`HEARTBEAT_SECONDS` and removes it when the run ends.

A lock is stale, and may be broken, when its owner is known to be gone:

* on this host (same host name and pid namespace): the pid is dead, or is another process now;
* on another host sharing the folder: the heartbeat is older than ``BGD_LOCK_STALE_SECONDS``
  (default :data:`DEFAULT_STALE_SECONDS`).

Breaking is rename-then-recheck: the breaker renames the lock to a private name, so two
breakers cannot both move the same file, and checks that what it moved is the very file it
judged stale (else it puts it back).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("bgd_experiments")

LOCK_SUFFIX = ".lock"
STALE_ENV_VAR = "BGD_LOCK_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 300.0
HEARTBEAT_SECONDS = 30.0
# A lock appears whole (written aside, then linked into place), so one that cannot be read
# is torn: its writer died or the file was damaged. Past this age nobody is still writing it.
TORN_GRACE_SECONDS = 5.0
_CLAIM_ATTEMPTS = 20


def lock_path(run_dir: Path) -> Path:
    """The lock of ``run_dir``: a file beside it, so that making or discarding the folder
    never touches the lock."""
    return run_dir.with_name(run_dir.name + LOCK_SUFFIX)


def _stale_seconds() -> float:
    return float(os.environ.get(STALE_ENV_VAR, DEFAULT_STALE_SECONDS))


def _pid_namespace() -> str | None:
    # Containers on one machine can share a host name but not their pids.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a reused pid from its first owner)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock, as written in the lock file."""

    owner: str
    host: str
    pid: int
    started: str
    argv: list[str] = field(default_factory=list)
    pid_namespace: str | None = None
    pid_start: str | None = None

    @classmethod
    def of_this_process(cls) -> LockOwner:
        return cls(
            owner=_user(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            argv=list(sys.argv),
            pid_namespace=_pid_namespace(),
            pid_start=_process_start(os.getpid()),
        )

    @classmethod
    def from_json(cls, text: str) -> LockOwner | None:
        try:
            payload = json.loads(text)
            return cls(
                owner=str(payload["owner"]),
                host=str(payload["host"]),
                pid=int(payload["pid"]),
                started=str(payload["started"]),
                argv=list(payload.get("argv") or []),
                pid_namespace=payload.get("pid_namespace"),
                pid_start=payload.get("pid_start"),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.owner}@{self.host} pid {self.pid} (since {self.started})"

    def on_this_host(self) -> bool:
        here = _pid_namespace()
        return self.host == socket.gethostname() and (
            self.pid_namespace is None or here is None or self.pid_namespace == here
        )


def _pid_alive(owner: LockOwner) -> bool:
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    if owner.pid_start is not None:
        start = _process_start(owner.pid)
        if start is not None and start != owner.pid_start:
            return False  # the pid was reused by another process
    return True


def is_stale(owner: LockOwner | None, heartbeat_age: float, stale_after: float) -> bool:
    """Whether a lock with this content and heartbeat age may be broken.

    A lock without a readable owner (torn: its writer died, or the file was damaged) is
    stale once older than :data:`TORN_GRACE_SECONDS`: no claimant writes one in place.
    """
    if owner is None:
        return heartbeat_age > TORN_GRACE_SECONDS
    if owner.on_this_host():
        return not _pid_alive(owner)
    return heartbeat_age > stale_after


@dataclass(frozen=True)
class _Seen:
    """A lock file as observed: its inode, content and age."""

    inode: tuple[int, int]
    text: str
    owner: LockOwner | None
    age: float


def _observe(path: Path) -> _Seen | None:
    try:
        with open(path) as handle:
            stat = os.fstat(handle.fileno())
            text = handle.read()
    except FileNotFoundError:
        return None
    return _Seen(
        (stat.st_dev, stat.st_ino), text, LockOwner.from_json(text), time.time() - stat.st_mtime
    )


def _break_stale(path: Path, seen: _Seen) -> None:
    """Remove the stale lock ``seen`` if it is still at ``path``; never a newer one."""
    grave = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return  # released or broken by someone else meanwhile
    moved = _observe(grave)
    if moved is not None and (moved.inode, moved.text) == (seen.inode, seen.text):
        grave.unlink(missing_ok=True)
        who = seen.owner.describe() if seen.owner else "an unreadable owner"
        log.warning("broke the stale lock %s of %s", path, who)
        return
    # A claimant made a fresh lock between our look and our rename: give it back (link
    # fails if yet another claimant took the free name; then that one holds the cell).
    with contextlib.suppress(OSError):
        os.link(grave, path)
    grave.unlink(missing_ok=True)


class CellLock:
    """A held lock: refreshes its heartbeat until :meth:`release`."""

    def __init__(self, path: Path, owner: LockOwner, inode: tuple[int, int], made: list[Path]):
        self.path = path
        self.owner = owner
        self._inode = inode
        self._made_folders = made
        self._stop = threading.Event()
        self._released = False
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat {path.name}", daemon=True
        )
        self._thread.start()
        _HELD.add(self)

    def still_ours(self) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._inode

    def _beat(self) -> None:
        every = HEARTBEAT_SECONDS
        while not self._stop.wait(every):
            if self.still_ours():
                with contextlib.suppress(OSError):
                    os.utime(self.path)
            else:
                log.warning("the lock %s is no longer this process's", self.path)
                return

    def release(self) -> None:
        """Stop the heartbeat, remove the lock (if still ours) and the folders made for it
        that are left empty."""
        if self._released:
            return
        self._released = True
        self._stop.set()
        if self.still_ours():
            self.path.unlink(missing_ok=True)
        for folder in self._made_folders:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        _HELD.discard(self)

    def __enter__(self) -> CellLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


_HELD: set[CellLock] = set()


def _release_all() -> None:
    for lock in list(_HELD):
        lock.release()


atexit.register(_release_all)


def _on_sigterm(signum: int, frame: Any) -> None:
    # Give the cells back, then die of the signal as the default action would.
    _release_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_release() -> None:
    """Release held locks on SIGTERM, unless someone (e.g. a cluster launcher) handles
    SIGTERM already: then the process may live on, and so must its locks."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it made, deepest first."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):
            made.mkdir()
    return missing


def _create_whole(path: Path, payload: bytes) -> tuple[int, int]:
    """Create ``path`` holding ``payload``, or raise FileExistsError: written to a private
    name first and hard-linked into place, so no reader ever sees it empty or half written."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(aside, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        try:
            os.write(fd, payload)
            os.fsync(fd)
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        os.link(aside, path)  # atomic, and fails if the name is taken
    finally:
        aside.unlink(missing_ok=True)
    return (stat.st_dev, stat.st_ino)


def try_claim(path: Path, stale_after: float | None = None) -> CellLock | LockOwner | None:
    """Take the lock at ``path``: the held :class:`CellLock`, or else who holds it (a
    :class:`LockOwner`; None when its file is being written or unreadable)."""
    stale_after = _stale_seconds() if stale_after is None else stale_after
    me = LockOwner.of_this_process()
    payload = json.dumps(asdict(me)).encode()
    seen: _Seen | None = None
    for _ in range(_CLAIM_ATTEMPTS):
        made = _make_parents(path.parent)
        try:
            inode = _create_whole(path, payload)
        except FileNotFoundError:
            continue  # a releaser removed the empty parent meanwhile: make it again
        except FileExistsError:
            seen = _observe(path)
            if seen is None:
                continue  # released meanwhile
            if not is_stale(seen.owner, seen.age, stale_after):
                return seen.owner
            _break_stale(path, seen)
            continue
        _install_sigterm_release()
        return CellLock(path, me, inode, made)
    return seen.owner if seen is not None else None


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[CellLock | LockOwner | None]:
    """``with claim(run_dir) as held:``: a :class:`CellLock` while this process owns the
    cell (released on leaving), else the holder as :func:`try_claim` reports it."""
    held = try_claim(lock_path(run_dir))
    try:
        yield held
    finally:
        if isinstance(held, CellLock):
            held.release()
