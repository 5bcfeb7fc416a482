"""Cell locks: a live owner keeps its cell, a dead one loses it, and racers get one winner."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgd_experiments import locks
from bgd_experiments.locks import CellLock, LockOwner, claim, lock_path, try_claim


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(path: Path, *, host: str, pid: int, age: float = 0.0) -> None:
    owner = {"owner": "someone", "host": host, "pid": pid, "started": "then", "argv": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))
    then = time.time() - age
    os.utime(path, (then, then))


def test_a_live_lock_is_kept_and_named(tmp_path):
    run_dir = tmp_path / "runs" / "cell"
    with claim(run_dir) as first:
        assert isinstance(first, CellLock)
        written = json.loads(lock_path(run_dir).read_text())
        assert written["pid"] == os.getpid() and written["host"] and written["argv"]
        second = try_claim(lock_path(run_dir))
        assert isinstance(second, LockOwner) and second.pid == os.getpid()
        assert f"pid {os.getpid()}" in second.describe()
    # Released: the lock and the folders made for it are gone; the cell is free again.
    assert not lock_path(run_dir).exists() and not (tmp_path / "runs").exists()
    with claim(run_dir) as again:
        assert isinstance(again, CellLock)


def test_the_lock_of_a_dead_process_on_this_host_is_broken(tmp_path):
    path = lock_path(tmp_path / "cell")
    _write_lock(path, host=LockOwner.of_this_process().host, pid=_dead_pid())
    held = try_claim(path)
    assert isinstance(held, CellLock)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    held.release()
    assert [p.name for p in tmp_path.iterdir()] == []  # no renamed stale lock left behind


@pytest.mark.parametrize(("age", "stale"), [(10.0, False), (1000.0, True)])
def test_a_lock_from_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path, age, stale):
    path = lock_path(tmp_path / "cell")
    # Another host: its pid says nothing here (this one is alive: our own).
    _write_lock(path, host="some-other-node", pid=os.getpid(), age=age)
    held = try_claim(path, stale_after=300)
    assert isinstance(held, CellLock) is stale
    if stale:
        held.release()
    else:
        assert held.host == "some-other-node"


def test_the_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_SECONDS", 0.05)
    path = lock_path(tmp_path / "cell")
    with claim(tmp_path / "cell") as held:
        assert isinstance(held, CellLock)
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 5


def _claim_and_hold(path: str, start, results) -> None:
    start.wait()
    held = try_claim(Path(path), stale_after=300)
    results.put(isinstance(held, CellLock))
    if isinstance(held, CellLock):
        time.sleep(0.5)  # hold while the others look
        held.release()


@pytest.mark.parametrize("stale_lock_first", [False, True])
def test_racing_claimants_get_exactly_one_winner(tmp_path, stale_lock_first):
    path = lock_path(tmp_path / "cell")
    if stale_lock_first:  # the racers also race to break it
        _write_lock(path, host=LockOwner.of_this_process().host, pid=_dead_pid())
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(6), context.Queue()
    racers = [
        context.Process(target=_claim_and_hold, args=(str(path), start, results)) for _ in range(6)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert sorted(results.get(timeout=5) for _ in racers) == [False] * 5 + [True]
    assert not path.exists()


def test_sigterm_gives_the_cell_back_and_still_kills(tmp_path):
    run_dir = tmp_path / "runs" / "cell"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from bgd_experiments.locks import claim\n"
            "with claim(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout.readline().strip() == "held"
    assert lock_path(run_dir).exists()
    holder.terminate()
    assert holder.wait(30) == -15
    assert not lock_path(run_dir).exists()


@pytest.mark.parametrize("content", ["", '{"user": "half'])
def test_a_torn_lock_is_broken_once_nobody_can_be_writing_it(tmp_path, content):
    path = lock_path(tmp_path / "cell")
    path.write_text(content)
    # Fresh: its writer may be mid-write (an older version wrote locks in place).
    assert try_claim(path, stale_after=300) is None
    old = time.time() - 2 * locks.TORN_GRACE_SECONDS
    os.utime(path, (old, old))
    held = try_claim(path, stale_after=300)
    assert isinstance(held, CellLock)
    assert LockOwner.from_json(path.read_text()).pid == os.getpid()
    held.release()


def test_a_claim_never_shows_a_partly_written_lock(tmp_path, monkeypatch):
    """The lock is written aside and linked into place: whoever sees the name sees it whole."""
    seen = []
    real_link = os.link

    def watching_link(source, target):
        seen.append(Path(source).read_text())
        assert not Path(target).exists()
        return real_link(source, target)

    monkeypatch.setattr(os, "link", watching_link)
    with claim(tmp_path / "cell") as held:
        assert isinstance(held, CellLock)
        assert LockOwner.from_json(seen[0]) == held.owner
    assert sorted(p.name for p in tmp_path.iterdir()) == []
