"""The jobs of ``bgd-run`` as library functions with plain arguments (no Hydra).

* :func:`train` -- one training run in its run folder (resumed / skipped as the folder says);
* :func:`search` -- one MBT search without training (Table 1), in its run folder;
* :func:`functions` -- the deterministic line-search experiments (Examples 3.6/3.7, Figure 2a);
* :func:`fig2` -- Figure 2: (a) with the experiments above, (b) Two-way Backtracking GD on the
  full-batch loss of a model.

Settings arrive as small frozen objects that check themselves when built
(:class:`DataSettings`, :class:`TrainerSettings`); models and optimizers as factories, which
check their own arguments.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bgd_experiments.distributed import DISTRIBUTED_MODES, SINGLE, Ranks, launched_world_size
from bgd_experiments.optim import SearchProgress
from bgd_experiments.records import RunStatus, RunSummary
from bgd_experiments.runfolder import (
    DATA_KEY,
    IDENTITY_KEY,
    SUMMARY_FILE,
    CellHeld,
    RunFolder,
    RunFolderError,
    RunIdentity,
    check_results_dir,
    check_run_folder,
    find_finished_run,
    identity_block,
    prepare_run_folder,
    readable_run_folder,
    run_folder,
    run_state,
    with_data_hash,
)

log = logging.getLogger("bgd_experiments")

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]
AUGMENTS = ("paper", "none", "flip_crop")
PROTOCOLS = ("paper", "clean")
PROGRESS_MODES = ("auto", "rich", "plain")
# The paper trains 200 epochs; a count beyond this is a typo, not a budget.
MAX_EPOCHS = 100_000


class SettingsError(ValueError):
    """Settings that cannot make a meaningful run; ``problems`` name each one by its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise SettingsError(problems)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer_problems(settings: Any, names: tuple[str, ...], optional: tuple[str, ...] = ()):
    """One problem per field that is not an integer (a float would be truncated silently)."""
    problems = []
    for name in names:
        value = getattr(settings, name)
        if not (_is_integer(value) or (name in optional and value is None)):
            allowed = "null or an integer" if name in optional else "an integer"
            problems.append(f"{name} must be {allowed}, got {value!r}")
    return problems


@dataclass(frozen=True)
class DataSettings:
    """Which images: dataset name and where it lies, the subsets and the augmentation."""

    name: str
    num_classes: int
    root: str = "data"
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    augment: str = "paper"

    def __post_init__(self) -> None:
        subsets = ("train_subset", "test_subset")
        _raise_if(_integer_problems(self, subsets, optional=subsets))
        problems = []
        if self.train_subset is not None and self.train_subset < self.num_classes:
            problems.append(
                f"train_subset must be null or >= {self.num_classes} (one image per class), "
                f"got {self.train_subset}"
            )
        if self.test_subset is not None and self.test_subset < self.num_classes:
            problems.append(
                f"test_subset must be null or >= {self.num_classes}, got {self.test_subset}"
            )
        if self.augment not in AUGMENTS:
            problems.append(f"augment must be paper, flip_crop or none, got {self.augment!r}")
        _raise_if(problems)


@dataclass(frozen=True)
class TrainerSettings:
    """How to train: epochs, batch sizes, device, layout, precision and compilation, protocol,
    display, early stop."""

    epochs: int = 200
    batch_size: int = 200
    eval_batch_size: int = 1000
    device: str = "auto"
    num_threads: int | None = None
    channels_last: bool | str = "auto"
    precision: str = "fp32"
    search_precision: str = "fp32"
    compile: bool = False
    progress: str = "auto"
    tensorboard: bool = True
    protocol: str = "paper"
    val_size: int = 5000
    baseline_stop_patience: int | None = 50
    # One run on several processes (torchrun): "auto" joins the process group a launcher
    # announces through WORLD_SIZE; "off" trains in this process alone whatever it says.
    distributed: str = "auto"
    # SyncBatchNorm on several processes: BatchNorm over the global batch, as on one GPU.
    sync_bn: bool = False

    def __post_init__(self) -> None:
        _raise_if(
            _integer_problems(
                self,
                ("epochs", "batch_size", "eval_batch_size", "num_threads", "val_size"),
                optional=("num_threads",),
            )
        )
        problems = []
        if self.distributed not in DISTRIBUTED_MODES:
            problems.append(f"distributed must be auto or off, got {self.distributed!r}")
        elif (processes := launched_world_size(self.distributed)) > 1 and (
            self.batch_size % processes
        ):
            problems.append(
                f"batch_size={self.batch_size} cannot be split over the {processes} processes "
                "the launcher started (WORLD_SIZE): use a batch size divisible by it"
            )
        if not isinstance(self.sync_bn, bool):
            problems.append(f"sync_bn must be true or false, got {self.sync_bn!r}")
        if self.progress not in PROGRESS_MODES:
            problems.append(f"progress must be auto, rich or plain, got {self.progress!r}")
        if not self.batch_size >= 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.eval_batch_size >= 1:
            problems.append(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            problems.append(f"epochs must be from 1 to {MAX_EPOCHS:,}, got {self.epochs}")
        device = str(self.device)
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            problems.append(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        elif device.startswith("cuda") and not torch.cuda.is_available():
            problems.append(f"device={device} but no CUDA device is available")
        patience = self.baseline_stop_patience
        if patience is not None and (type(patience) is not int or patience < 0):  # no bool
            problems.append(
                f"baseline_stop_patience must be null or an integer >= 0, got {patience!r}"
            )
        if self.channels_last not in ("auto", True, False):
            problems.append(
                f"channels_last must be auto, true or false, got {self.channels_last!r}"
            )
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol must be paper or clean, got {self.protocol!r}")
        problems += self._kernel_problems()
        if (
            self.sync_bn is True
            and not problems
            and launched_world_size(self.distributed) > 1
            and self.torch_device.type != "cuda"
        ):
            problems.append(
                "sync_bn=true needs CUDA: torch's SyncBatchNorm has no CPU kernel "
                "(a CPU run on several processes normalises each shard on its own)"
            )
        _raise_if(problems)

    def _kernel_problems(self) -> list[str]:
        from bgd_experiments.training.runtime import (
            PRECISIONS,
            SEARCH_PRECISIONS,
            cpu_compiler_missing,
        )

        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.search_precision not in SEARCH_PRECISIONS:
            problems.append(
                f"search_precision must be fp32 or train, got {self.search_precision!r}"
            )
        if not isinstance(self.compile, bool):
            problems.append(f"compile must be true or false, got {self.compile!r}")
        elif self.compile and not self._wants_cuda() and (why := cpu_compiler_missing()):
            problems.append(f"compile=true on CPU: {why}")
        return problems

    def check_with(self, data: DataSettings) -> None:
        """The checks that need the data's settings too."""
        if self.protocol == "clean" and not self.val_size >= data.num_classes:
            raise SettingsError(
                [
                    f"val_size must be >= {data.num_classes} for the clean protocol, "
                    f"got {self.val_size}"
                ]
            )

    def _wants_cuda(self) -> bool:
        device = str(self.device)
        return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def runtime_model(self, network: nn.Module) -> nn.Module:
        """``network`` in this precision, compiled or not (itself in fp32 eager mode); sets
        the device's kernel settings (cuDNN autotuning on CUDA)."""
        from bgd_experiments.training.runtime import configure_device, prepare_model

        configure_device(next(network.parameters()).device)
        return prepare_model(
            network,
            precision=self.precision,
            compile=self.compile,
            search_precision=self.search_precision,
        )

    def channels_last_on(self, device: torch.device) -> bool:
        from bgd_experiments.models import use_channels_last

        return use_channels_last(self.channels_last, device)


def already_made(payload: Path, request: dict[str, Any], outputs: list[Path], force: bool) -> bool:
    """Whether ``payload`` records this very ``request`` and every output exists, so that
    re-running a target skips artefacts that are not run folders (``force=true`` remakes).
    Logs the skip."""
    if force or not all(path.exists() for path in [payload, *outputs]):
        return False
    try:
        recorded = json.loads(payload.read_text()).get("request")
    except (OSError, ValueError, AttributeError):
        return False
    # A JSON round trip of the request, so tuples and lists compare alike.
    if recorded != json.loads(json.dumps(request)):
        return False
    log.info("skipped: %s has these settings (force=true reruns)", payload)
    return True


def _write_with_request(
    payload: dict[str, Any],
    request: dict[str, Any],
    write: Callable[[dict[str, Any], Path], None],
    out_dir: Path,
) -> dict[str, Any]:
    """Store ``request`` verbatim in ``payload`` (what :func:`already_made` compares on the next
    call, so a re-run can be told from a new request), write it with ``write``, return it."""
    payload["request"] = request
    write(payload, out_dir)
    return payload


def describe_data_source(data: DataSettings, identity: dict[str, str | None] | None = None) -> str:
    """What the images are, for the provenance line of the tables: name and content hash."""
    from bgd_experiments.data import data_identity, describe_data

    identity = identity or data_identity(data.name, data.root)
    return describe_data(data.name, identity, bool(data.download))


def load_data(data: DataSettings, trainer: TrainerSettings, seed: int):
    """(train, val or None, test) datasets, subsets and validation split applied."""
    from bgd_experiments import data as cifar

    train = cifar.load_cifar(data.name, data.root, "train", download=data.download)
    test = cifar.load_cifar(data.name, data.root, "test", download=data.download)
    val = None
    try:
        if trainer.protocol == "clean":
            train, val = cifar.split_validation(train, trainer.val_size, seed=seed)
        if data.train_subset is not None:
            train = cifar.class_balanced_subset(train, data.train_subset, seed=seed)
        if data.test_subset is not None:
            # A fixed choice (seed 0), so every run of a comparison sees the same test images.
            test = cifar.class_balanced_subset(test, data.test_subset, seed=0)
    except ValueError as error:
        raise SettingsError([f"dataset subsets / validation split: {error}"]) from error
    return train, val, test


def seeded_model(make_model: ModelFactory, seed: int, device: torch.device, channels_last: bool):
    # Seeded right before construction: every optimizer of a comparison (same seed) starts
    # from the same initial weights.
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    return make_model().to(device, memory_format=memory_format)


@dataclass(frozen=True)
class RunSpec:
    """Everything that names and configures one run folder (training or search), validated
    when built. The CLI builds one from the composed config; a notebook or a script can
    build one by hand (``config`` and ``settings`` may then stay None: config.yaml records
    the spec's own fields, and the folder is named by the path's settings alone)."""

    results_dir: str
    data: DataSettings
    trainer: TrainerSettings
    make_model: ModelFactory
    make_optimizer: OptimizerFactory
    model_name: str
    model_width: float
    optimizer_name: str
    lr: float
    seed: int = 0
    budget: str | None = None
    config: dict[str, Any] | None = None  # the resolved config, recorded in config.yaml
    force: bool = False
    # The result-changing settings that differ from the reference config (dotted keys; see
    # bgd_experiments.runfolder.identity_settings): with the data's hash, the folder's digest.
    settings: dict[str, Any] | None = None
    ranks: Ranks = SINGLE  # this process's place in a distributed run (torchrun)

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (_is_integer(self.seed) and 0 <= self.seed < 2**32):
            problems.append(f"seed must be an integer from 0 to 2^32-1, got {self.seed!r}")
        if not (isinstance(self.model_width, int | float) and self.model_width > 0):
            problems.append(f"model_width must be > 0, got {self.model_width!r}")
        _raise_if(problems)
        self.trainer.check_with(self.data)

    def recorded_config(self) -> dict[str, Any]:
        """What config.yaml records: the resolved config, or the spec's own fields."""
        if self.config is not None:
            return self.config
        return {
            "task": "train",
            "dataset": asdict(self.data),
            "model": {"name": self.model_name, "width": self.model_width},
            "optimizer": {"name": self.optimizer_name, "lr": self.lr},
            "trainer": asdict(self.trainer),
            "seed": self.seed,
        }


def _record_config(
    config: dict[str, Any], data: dict[str, str | None], settings: dict[str, Any]
) -> dict[str, Any]:
    # The data by name and hash, dataset.root by name only: a committed config.yaml names
    # no path of the machine it ran on. The identity block: what the folder's digest stands for.

    plain = copy.deepcopy(config)
    plain["dataset"]["root"] = data["name"]
    plain[DATA_KEY] = dict(data)
    plain[IDENTITY_KEY] = identity_block(settings)
    return plain


def _check_shards(num_samples: int, batch_size: int, world_size: int) -> None:
    """Every process needs an image of every global batch (an empty shard has no mean)."""
    last = num_samples % batch_size
    if world_size > 1 and 0 < last < world_size:
        raise SettingsError(
            [
                f"train_subset: the last batch of each epoch holds {last} images, fewer than "
                f"the {world_size} processes; choose a training set size that leaves none "
                "of them without an image"
            ]
        )


@dataclass(frozen=True)
class _NamedRun:
    """A run's identity (data source still to fill in), its folder and what names it."""

    identity: RunIdentity
    run_dir: Path
    data_id: dict[str, Any]
    settings: dict[str, Any]  # the digest input: non-default settings + the data's hash


def _name_run(request: RunSpec, task: str) -> _NamedRun:
    """The run's identity and its folder, named by its settings and its data's content."""
    from bgd_experiments import data as cifar

    data, trainer = request.data, request.trainer
    identity = RunIdentity(
        task=task,
        dataset=data.name,
        model=request.model_name,
        optimizer=request.optimizer_name,
        lr=float(request.lr),
        batch_size=int(trainer.batch_size),
        seed=int(request.seed),
        epochs=int(trainer.epochs) if task == "train" else 0,
        width=float(request.model_width),
        train_subset=data.train_subset,
        augment=data.augment,
        budget=request.budget,
        data_source="",  # filled in once the data is known to be there
    )
    # By content (hash cached per file version): the same archive elsewhere is the same run,
    # and another archive through the same dataset.root is another run (another folder).
    data_id = cifar.data_identity(data.name, data.root)
    if data_id["sha256"] is None and data.download and request.ranks.is_main:
        # To be downloaded: fetch it now, so that its hash names the folder (and the lock).
        cifar.check_dataset_source(data.name, data.root, download=True)
        data_id = cifar.data_identity(data.name, data.root)
    settings = with_data_hash(request.settings or {}, data_id)
    run_dir = run_folder(request.results_dir, identity, settings)
    if data_id["sha256"] is None and not request.force:
        # The data is not here: a finished run is still found by its other settings.
        readable = readable_run_folder(request.results_dir, identity)
        run_dir = find_finished_run(readable, settings, data_id["name"]) or run_dir
    return _NamedRun(identity, run_dir, data_id, settings)


@contextlib.contextmanager
def _claim(run_dir: Path, results_dir: str, force: bool = False) -> Iterator[bool]:
    from bgd_experiments.locks import CellLock, lock_path

    check_results_dir(results_dir)
    with RunFolder(run_dir).claim() as held:
        if not isinstance(held, CellLock):
            who = held.describe() if held is not None else "a process still writing its lock"
            raise CellHeld(
                f"{run_dir} is taken by {who} (lock {lock_path(run_dir)}); nothing trained"
                + (": force=true never takes a cell that a live process holds" if force else "")
                + "; run again once it is done (a finished run is then skipped)"
            )
        yield True


@contextlib.contextmanager
def _claimed_cell(
    run_dir: Path, results_dir: str, ranks: Ranks = SINGLE, force: bool = False
) -> Iterator[bool]:
    """Whether this process owns the cell ``run_dir`` (held until the block ends); a cell
    that another live process holds raises :class:`CellHeld` naming it. In a distributed
    run rank 0 holds the lock and every rank follows its answer."""
    with contextlib.ExitStack() as stack:
        yield ranks.on_main(lambda: stack.enter_context(_claim(run_dir, results_dir, force)))


def _refuse_fewer_epochs(run_dir: Path, done: int, asked: int) -> None:

    if done > asked:
        raise RunFolderError(
            f"{run_dir} has trained {done} epochs, more than trainer.epochs={asked}: ask "
            f"trainer.epochs={done} (or more) to use it, or force=true to train it again"
        )


def _extends_finished_run(run_dir: Path, epochs: int) -> bool:
    """Whether a finished training run is to train more epochs (a run that stopped early or
    diverged never is); refuses a run that trained more epochs than ``epochs``."""

    folder = RunFolder(run_dir)
    try:
        summary = folder.read_summary()
        done, status = int(summary.epochs_completed), summary.status  # type: ignore[union-attr]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(
            f"{run_dir / SUMMARY_FILE} cannot be read ({error}); rerun with force=true to "
            "train this run again"
        ) from None
    _refuse_fewer_epochs(run_dir, done, epochs)
    if status is not RunStatus.FINISHED or done == epochs:
        return False
    if not folder.checkpoint_file.exists():
        raise RunFolderError(
            f"{run_dir} finished {done} epochs but has no checkpoint to train on from: "
            f"rerun with force=true to train all {epochs} epochs again"
        )
    return True


@dataclass
class OpenedRun:
    """A run ready to train or search: its folder claimed and prepared, everything built."""

    run_dir: Path
    identity: RunIdentity  # with the data source filled in
    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_batches: Any  # a DeviceLoader over the training set
    eval_batches: Callable[[Any], Any]  # dataset -> its evaluation batches
    val_set: Any
    test_set: Any


def _work_to_do(request: RunSpec, named: _NamedRun, recorded: dict[str, Any]) -> tuple[bool, bool]:
    """(whether the run has work to do, whether it extends a finished run), read from its
    folder without writing anything; refuses a folder of another config or a data source
    that is not there (a finished run skips that check)."""
    from bgd_experiments import data as cifar

    data, epochs, run_dir = request.data, int(request.trainer.epochs), named.run_dir
    state = RunStatus.NEW if request.force else run_state(run_dir)
    training = named.identity.task == "train"
    extend = state.ended and training and _extends_finished_run(run_dir, epochs)
    has_work = not state.ended or extend
    if has_work:
        # Cheap checks of the data source before any model is built or any folder is
        # written, so a missing dataset leaves nothing behind. Finished runs skip them:
        # an uncached archive takes ~2 s to list, per job of a sweep.
        cifar.check_dataset_source(data.name, data.root, download=data.download)
    check_run_folder(run_dir, recorded, force=request.force)
    if has_work and (state is RunStatus.INCOMPLETE or extend) and training:
        _refuse_fewer_epochs(run_dir, int(RunFolder(run_dir).read_checkpoint()["epoch"]), epochs)
    return has_work, extend


def _open_run(request: RunSpec, named: _NamedRun) -> OpenedRun | None:
    """Check the data, the folder and everything the run needs, then prepare its folder (the
    first write); None when it is finished already. The caller holds the cell's lock; in a
    distributed run rank 0 alone reads and writes the folder, the others follow it."""
    from bgd_experiments import data as cifar

    data, trainer, ranks = request.data, request.trainer, request.ranks
    run_dir, data_id = named.run_dir, named.data_id
    recorded = _record_config(request.recorded_config(), data_id, named.settings)
    has_work, extend = ranks.on_main(lambda: _work_to_do(request, named, recorded))
    identity = replace(
        named.identity, data_source=describe_data_source(data, data_id), data=data_id
    )
    if not has_work:
        log.info("skipped: %s is finished (force=true reruns it)", run_dir)
        return None
    # Everything that can refuse the run (decoding every image included) runs before the
    # folder is written, so a refused run leaves no half-made folder behind.
    device = ranks.device(trainer.torch_device)
    # Rank 0 first: it decodes and caches the images, the others then read the cache (only
    # whether it succeeded crosses to them, not the images).
    loaded: list[Any] = []
    ranks.on_main(lambda: loaded.append(_load_checked(request)))
    train_set, val_set, test_set = loaded[0] if loaded else _load_checked(request)
    channels_last = trainer.channels_last_on(device)
    network = seeded_model(request.make_model, request.seed, device, channels_last)
    if ranks.active and trainer.sync_bn:
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    optimizer = request.make_optimizer(network.parameters())
    if identity.task == "search" and not hasattr(optimizer, "search"):
        raise SettingsError([f"task=search needs an MBT optimizer, got {identity.optimizer}"])
    shard = (ranks.rank, ranks.world_size)

    def batches(dataset, batch_size: int, train: bool):
        return cifar.DeviceLoader.from_dataset(
            dataset,
            batch_size,
            shuffle=train,
            augment=data.augment if train else "none",
            seed=int(request.seed),
            device=device,
            channels_last=channels_last,
            shard=shard,
        )

    state = ranks.on_main(
        lambda: prepare_run_folder(run_dir, recorded, force=request.force, extend=extend)
    )
    if extend:
        log.info("extending %s to %d epochs", run_dir, int(trainer.epochs))
    else:
        log.info("%s run in %s", "resuming" if state is RunStatus.INCOMPLETE else "new", run_dir)
    return OpenedRun(
        run_dir,
        identity,
        trainer.runtime_model(network),
        optimizer,
        batches(train_set, int(trainer.batch_size), train=True),
        lambda dataset: cifar.EvalBatches(batches(dataset, trainer.eval_batch_size, False)),
        val_set,
        test_set,
    )


def _load_checked(request: RunSpec):
    """(train, val or None, test) of the run, its last batch checked against the ranks."""
    sets = load_data(request.data, request.trainer, request.seed)
    _check_shards(len(sets[0]), int(request.trainer.batch_size), request.ranks.world_size)
    return sets


@contextlib.contextmanager
def _opened_run(request: RunSpec, task: str) -> Iterator[OpenedRun | None]:
    """The run named, its cell claimed (held until the block ends) and opened, or None when
    another process holds the cell or the run is finished."""
    named = _name_run(request, task)
    with _claimed_cell(named.run_dir, request.results_dir, request.ranks, request.force) as owned:
        yield _open_run(request, named) if owned else None


def train(request: RunSpec) -> dict[str, Any] | None:
    """Train one run (resuming / extending / skipping as its folder says); its summary, None
    if skipped (finished, or another process holds the cell)."""
    from bgd_experiments.training import fit

    with _opened_run(request, "train") as run:
        if run is None:
            return None
        trainer = request.trainer
        return fit(
            run.model,
            run.optimizer,
            run.train_batches,
            run.eval_batches(run.test_set),
            val_loader=run.eval_batches(run.val_set) if run.val_set is not None else None,
            epochs=int(trainer.epochs),
            run_dir=run.run_dir,
            identity=run.identity,
            progress=trainer.progress,
            tensorboard=bool(trainer.tensorboard),
            baseline_stop_patience=trainer.baseline_stop_patience,
            ranks=request.ranks,
        )


def search(request: RunSpec) -> dict[str, Any] | None:
    """One MBT search from ``request.lr`` on the training set, no training (Table 1); writes
    the run folder's summary with the found rate. None if the run is finished already."""
    with _opened_run(request, "search") as run:
        if run is None:
            return None
        return _search_in(run, request.ranks)


# A search-only run shows nothing else while it runs (on a CPU a full-width search at Table
# 1's batch 800 takes many minutes), so it logs where it is, at most this often.
SEARCH_LOG_INTERVAL_S = 10.0


def _search_progress_log(
    interval_s: float = SEARCH_LOG_INTERVAL_S,
) -> Callable[[SearchProgress], None]:
    """A search progress callback that logs the batch and trial count, at most every
    ``interval_s`` seconds and always after the last batch."""
    started = time.perf_counter()
    last_logged = started

    def report(progress: SearchProgress) -> None:
        nonlocal last_logged
        now = time.perf_counter()
        if now - last_logged < interval_s and progress.batch < progress.num_batches:
            return
        last_logged = now
        log.info(
            "search: batch %d of %d, %d trials, %.0f s",
            progress.batch,
            progress.num_batches,
            progress.trials,
            now - started,
        )

    return report


def _search_in(run: OpenedRun, ranks: Ranks = SINGLE) -> dict[str, Any]:
    from bgd_experiments.training.loop import search_batches
    from bgd_experiments.training.provenance import provenance

    identity, model, optimizer, loader = run.identity, run.model, run.optimizer, run.train_batches

    optimizer.reducer = ranks.reducer()  # None on one process
    result = optimizer.search(
        model,
        nn.CrossEntropyLoss(),
        search_batches(loader, 0),
        num_samples=loader.num_samples,
        progress=_search_progress_log() if ranks.is_main else None,
    )
    log.info(
        "search from lr %g found lr %.6g (%d trials, %.1fs, %s)",
        identity.lr,
        result.lr,
        result.trials,
        result.wall_time,
        result.status,
    )
    status = RunStatus.DIVERGED if result.status == "nonfinite" else RunStatus.FINISHED
    summary = RunSummary(
        status=status,
        run=asdict(identity),
        found_lr=result.lr,
        search=asdict(result),
        wall_time=result.wall_time,
    )
    for key, value in provenance(loader.device).items():
        summary.set(key, value)
    if ranks.active:
        summary.distributed = {"world_size": ranks.world_size, "backend": ranks.backend}
    if ranks.is_main:
        RunFolder(run.run_dir).write_summary(summary)
    ranks.barrier()
    return summary.to_json()


def functions(out_dir: str | Path, settings: dict[str, Any], force: bool = False):
    """The deterministic line-search experiments (``functions.md``, Figure 2a); None when
    ``out_dir`` holds them with these settings already."""
    from bgd_experiments.linesearch.experiments import run_deterministic_experiments
    from bgd_experiments.reporting.functions import write_functions_report

    out_dir = Path(out_dir)
    request = {"functions": settings}
    outputs = [out_dir / name for name in ("functions.md", "fig2a.png", "fig2a.pdf")]
    if already_made(out_dir / "functions.json", request, outputs, force):
        return None
    log.info("deterministic line-search experiments -> %s (%s)", out_dir, settings)
    report = run_deterministic_experiments(**settings)
    return _write_with_request(report, request, write_functions_report, out_dir)


def fig2b(
    out_dir: str | Path,
    settings: dict[str, Any],
    *,
    data: DataSettings,
    trainer: TrainerSettings,
    make_model: ModelFactory,
    model_config: dict[str, Any],
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any] | None:
    """Figure 2(b): Two-way Backtracking GD on the full-batch loss of ``make_model()`` over
    the (un-augmented) training subset; None when ``out_dir`` holds it already."""
    from bgd_experiments import data as cifar
    from bgd_experiments.linesearch.experiments import run_fig2b
    from bgd_experiments.reporting.functions import write_fig2b
    from bgd_experiments.training.provenance import artefact_provenance

    out_dir = Path(out_dir)
    request = {
        "fig2b": settings,
        "model": model_config,
        "dataset": {
            "source": describe_data_source(data),
            "train_subset": data.train_subset,
            "augment": data.augment,
        },
        "seed": int(seed),
    }
    outputs = [out_dir / "fig2b.png", out_dir / "fig2b.pdf"]
    if already_made(out_dir / "fig2b.json", request, outputs, force):
        return None
    # As for run folders: the data source is checked only when there is work to do.
    cifar.check_dataset_source(data.name, data.root, download=data.download)
    device = trainer.torch_device
    train_set, _, _ = load_data(data, trainer, seed)
    channels_last = trainer.channels_last_on(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    inputs = cifar.normalize(train_set.images.to(device)).contiguous(memory_format=memory_format)
    targets = train_set.labels.to(device, torch.int64)
    model = seeded_model(make_model, seed, device, channels_last)
    log.info("Figure 2(b): Two-way Backtracking GD on %d images -> %s", len(targets), out_dir)
    payload = run_fig2b(model, inputs, targets, **settings)
    payload["provenance"] = artefact_provenance(describe_data_source(data), device)
    return _write_with_request(payload, request, write_fig2b, out_dir)


def fig2(
    out_dir: str | Path,
    functions_settings: dict[str, Any],
    fig2b_settings: dict[str, Any],
    **fig2b_args,
) -> dict[str, Any]:
    """Figure 2(a) comes with the deterministic experiments; 2(b) trains nothing."""
    return {
        "fig2a": functions(out_dir, functions_settings, force=fig2b_args.get("force", False)),
        "fig2b": fig2b(out_dir, fig2b_settings, **fig2b_args),
    }
