"""A Hydra launcher for one machine with several GPUs (``hydra/launcher=local``).

Jobs run in parallel, each in its own subprocess pinned to one GPU by ``CUDA_VISIBLE_DEVICES``
(so ``trainer.device=auto`` or ``cuda`` is that GPU), ``jobs_per_gpu`` of them per GPU. With
no GPU (``gpus=0``, or none visible) ``cpu_jobs`` jobs run in parallel on the CPU, each with
``threads_per_job`` threads (default: the cores divided among the jobs).

A job is what Hydra's basic launcher runs in-process (the sweep config of its overrides, with
``hydra.job.num`` set, through ``run_job``), pickled with cloudpickle and run by
:mod:`hydra_plugins.bgd_local_launcher._job` in a fresh interpreter; its ``JobReturn`` comes
back the same way, so any sweeper reads the results as it reads the basic launcher's. Each
line a job prints is prefixed with ``[#<job number>]``.

Stopping: SIGTERM or Ctrl-C sends SIGTERM to every running job, waits ``grace_s`` seconds
for them to stop and SIGKILLs the rest; jobs that lose their launcher (killed with SIGKILL)
notice it within half a second and stop as on SIGTERM. A rerun of the sweep resumes them.
"""

# No `from __future__ import annotations` here: Hydra imports plugins outside sys.modules,
# where dataclasses cannot resolve string annotations.
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class LocalLauncherConf:
    _target_: str = "hydra_plugins.bgd_local_launcher.ParallelLocalLauncher"
    # null: every GPU this process sees; a number: the first N of them; a list: these ids;
    # 0: none (CPU jobs).
    gpus: Any = None
    jobs_per_gpu: int = 1
    # Jobs in parallel when there is no GPU.
    cpu_jobs: int = 2
    # OMP_NUM_THREADS of each job (unless set in the environment); null: cores / jobs.
    threads_per_job: int | None = None
    # After SIGTERM or Ctrl-C: seconds the running jobs get to stop before SIGKILL.
    grace_s: float = 30.0


ConfigStore.instance().store(
    group="hydra/launcher", name="bgd_local", node=LocalLauncherConf, provider="bgd"
)


class JobFailed(RuntimeError):
    """A job's process ended without handing back a result (killed, or it exited)."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ids for ``CUDA_VISIBLE_DEVICES``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch  # only when needed: a CPU sweep with gpus=0 never asks

    return [str(index) for index in range(torch.cuda.device_count())]


def device_slots(gpus: Any, jobs_per_gpu: int, cpu_jobs: int) -> list[str]:
    """One ``CUDA_VISIBLE_DEVICES`` value per parallel job: each GPU ``jobs_per_gpu`` times,
    or ``cpu_jobs`` empty values (no GPU) when there is none."""
    if jobs_per_gpu < 1 or cpu_jobs < 1:
        raise ValueError(f"jobs_per_gpu and cpu_jobs must be >= 1, got {jobs_per_gpu}, {cpu_jobs}")
    if gpus is None:
        chosen = visible_gpus()
    elif isinstance(gpus, bool):
        raise ValueError(f"gpus must be null, a number or a list of ids, got {gpus!r}")
    elif isinstance(gpus, int):
        available = visible_gpus() if gpus > 0 else []
        if gpus > len(available):
            raise ValueError(f"gpus={gpus} but this machine shows {len(available)} GPU(s)")
        chosen = available[:gpus]
    else:
        chosen = [str(gpu) for gpu in gpus]
    if not chosen:
        return [""] * cpu_jobs
    # GPU-major order: the first jobs spread over the GPUs before any GPU gets a second one.
    return [gpu for _ in range(jobs_per_gpu) for gpu in chosen]


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # what a SLURM allocation or taskset allows
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _forward_lines(stream: IO[str], prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


class _RunningJob:
    def __init__(self, number: int, overrides: list[str], slot: int, work_dir: Path) -> None:
        self.number = number
        self.overrides = overrides
        self.slot = slot
        self.payload = work_dir / f"job-{number}.pkl"
        self.result = work_dir / f"job-{number}.result.pkl"
        self.process: subprocess.Popen[str] | None = None
        self.output: threading.Thread | None = None

    def start(self, payload: bytes, env: dict[str, str]) -> None:
        self.payload.write_bytes(payload)
        command = [
            sys.executable,
            "-m",
            "hydra_plugins.bgd_local_launcher._job",
            str(self.payload),
            str(self.result),
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        self.output = threading.Thread(
            target=_forward_lines, args=(self.process.stdout, f"[#{self.number}] "), daemon=True
        )
        self.output.start()

    def finished(self) -> bool:
        assert self.process is not None
        return self.process.poll() is not None

    def job_return(self) -> JobReturn:
        import cloudpickle

        assert self.process is not None and self.output is not None
        self.output.join(timeout=5)
        if self.result.exists():
            with open(self.result, "rb") as handle:
                return cloudpickle.load(handle)
        failure = JobFailed(
            f"job #{self.number} ({' '.join(filter_overrides(self.overrides))}) "
            f"exited with code {self.process.returncode} and no result"
        )
        return JobReturn(overrides=self.overrides, status=JobStatus.FAILED, _return_value=failure)


class _StopRequested(SystemExit):
    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name


class ParallelLocalLauncher(Launcher):
    def __init__(
        self,
        gpus: Any = None,
        jobs_per_gpu: int = 1,
        cpu_jobs: int = 2,
        threads_per_job: int | None = None,
        grace_s: float = 30.0,
    ) -> None:
        self.gpus = OmegaConf.to_container(gpus) if OmegaConf.is_config(gpus) else gpus
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.cpu_jobs = int(cpu_jobs)
        self.threads_per_job = threads_per_job
        self.grace_s = float(grace_s)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _job_env(self, device: str, parallel: int) -> dict[str, str]:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=device)
        if "OMP_NUM_THREADS" not in os.environ:
            threads = self.threads_per_job or max(1, _usable_cores() // parallel)
            env["OMP_NUM_THREADS"] = str(threads)
        return env

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import cloudpickle

        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        slots = device_slots(self.gpus, self.jobs_per_gpu, self.cpu_jobs)
        where = ", ".join(f"GPU {gpu}" for gpu in dict.fromkeys(slots)) if slots[0] else "CPU"
        log.info("launching %d jobs, %d at a time on %s", len(job_overrides), len(slots), where)
        pending = deque(
            (initial_job_idx + offset, list(overrides))
            for offset, overrides in enumerate(job_overrides)
        )
        free = list(range(len(slots)))
        running: list[_RunningJob] = []
        results: dict[int, JobReturn] = {}
        singleton_state = Singleton.get_state()
        with tempfile.TemporaryDirectory(prefix="bgd-launcher-") as work_dir, self._stoppable():
            try:
                while pending or running:
                    while pending and free:
                        number, overrides = pending.popleft()
                        job = _RunningJob(number, overrides, free.pop(0), Path(work_dir))
                        payload = {
                            "hydra_context": self.hydra_context,
                            "task_function": self.task_function,
                            "config": self.config,
                            "overrides": overrides,
                            "job_num": number,
                            "singleton_state": singleton_state,
                            "launcher_pid": os.getpid(),
                        }
                        device = slots[job.slot]
                        job.start(cloudpickle.dumps(payload), self._job_env(device, len(slots)))
                        log.info(
                            "#%d started on %s: %s",
                            number,
                            f"GPU {device}" if device else "CPU",
                            " ".join(filter_overrides(overrides)),
                        )
                        running.append(job)
                    for job in [job for job in running if job.finished()]:
                        running.remove(job)
                        free.append(job.slot)
                        results[job.number] = job.job_return()
                        log.info(
                            "#%d ended: %s", job.number, results[job.number].status.name.lower()
                        )
                    time.sleep(0.05)
            except BaseException as stop:
                if running:
                    reason = getattr(stop, "signal_name", type(stop).__name__)
                    log.warning(
                        "%s: stopping %d running job(s); a rerun of the sweep resumes them",
                        reason,
                        len(running),
                    )
                    self._stop(running)
                raise
        return [results[number] for number in sorted(results)]

    def _stop(self, running: list[_RunningJob]) -> None:
        processes = [job.process for job in running if job.process is not None]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for job in running:  # their last lines (e.g. why they stopped)
            if job.output is not None:
                job.output.join(timeout=5)

    @contextmanager
    def _stoppable(self) -> Iterator[None]:
        """SIGTERM raises in the launcher's main thread, so its jobs are stopped, not orphaned."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, _raise_stop_requested)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def _raise_stop_requested(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: the stop is under way
    raise _StopRequested(signum)
