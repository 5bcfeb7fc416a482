"""Test-only start-up hook: SIGKILL this process after ``BGD_KILL_AT_STEP`` optimizer steps.

A test puts this folder first on ``PYTHONPATH`` of a ``bgd-run`` subprocess, to prove that
resuming an interrupted run reproduces the uninterrupted one. The MBT search never calls
``optimizer.step()``, so only training steps are counted.
"""

import os
import signal

_KILL_AT = os.environ.get("BGD_KILL_AT_STEP")

if _KILL_AT is not None:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    _steps = 0

    def _count_and_kill(optimizer, args, kwargs) -> None:
        global _steps
        _steps += 1
        if _steps >= int(_KILL_AT):
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(_count_and_kill)
