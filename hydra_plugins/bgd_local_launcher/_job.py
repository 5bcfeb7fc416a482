"""One job of :class:`~hydra_plugins.bgd_local_launcher.ParallelLocalLauncher`, in its own
interpreter: ``python -m hydra_plugins.bgd_local_launcher._job PAYLOAD RESULT``.

It runs the job as Hydra's basic launcher would in-process and writes the ``JobReturn`` to
RESULT. A job whose launcher has died (SIGKILL leaves no chance to stop it) sends itself
SIGTERM, which the application may handle to stop cleanly, so no orphan goes on training.
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path


def _stop_when_orphaned(launcher_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _write_result(path: Path, job_return) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(job_return)
    except Exception as error:  # e.g. a return value or exception that does not pickle
        job_return._return_value = RuntimeError(
            f"the job's result could not be pickled ({error}): {job_return._return_value!r}"
        )
        data = cloudpickle.dumps(job_return)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def main(payload_path: str, result_path: str) -> None:
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    with open(payload_path, "rb") as handle:
        job = cloudpickle.load(handle)
    _stop_when_orphaned(job["launcher_pid"])
    Singleton.set_state(job["singleton_state"])
    setup_globals()
    hydra_context = job["hydra_context"]
    sweep_config = hydra_context.config_loader.load_sweep_config(
        job["config"], list(job["overrides"])
    )
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = job["job_num"]
        sweep_config.hydra.job.num = job["job_num"]
    job_return = run_job(
        hydra_context=hydra_context,
        task_function=job["task_function"],
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    _write_result(Path(result_path), job_return)


if __name__ == "__main__":
    main(*sys.argv[1:3])
