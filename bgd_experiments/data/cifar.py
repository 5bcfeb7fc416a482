"""CIFAR-10/100 as uint8 tensors, from torchvision, torchvision's files, or image folders.

Three sources are accepted, tried in this order for a given ``root``:

1. a folder holding torchvision's CIFAR files (``cifar-10-batches-py/`` or
   ``cifar-100-python/``), ``root`` being that folder or its parent as torchvision expects.
   The pickles are read here directly, NOT through ``torchvision.datasets.CIFAR10``, because
   torchvision insists on the md5 sums of the official files; reading them ourselves lets
   generated test fixtures (same format, other bytes) load as well;
2. an image-folder tree ``<root>/{train,test}/<class>/*.{png,jpg}`` (``root`` may also be the
   parent of one folder holding that tree, e.g. ``cifar10/train/...``), or a ``.tar.gz`` of
   one (read member by member with :mod:`tarfile`, never extracted to disk). A folder that
   holds an archive named after the dataset (``cifar10-jpeg.tar.gz``) also works, so the
   shared data folder can be passed as ``root`` directly;
3. with ``download=True`` and nothing local: torchvision downloads into ``root``, then 1.

Image folders are decoded once into a uint8 array cached under the cache dir (argument,
else ``$BGD_CACHE_DIR``, else ``~/.cache/bgd-experiments``); the cache entry is keyed by the
sha256 of the source's bytes, the dataset name and the split, and is written atomically.
torchvision's pickles go through the same cache (cheap either way).

Run records name the data by content, not path: :func:`data_identity` gives the source's name
and a sha256 (archive bytes, or a folder's files in sorted order). The digest is kept in the
cache folder under the signature of every file (inode, size, mtime and ctime: ``touch -d``
resets mtime but not ctime), so it is computed once per file version; a decode is recorded
with that digest only if no file's signature changed while it was read.

Nothing read here runs code or takes unbounded memory: torchvision's pickles go through an
unpickler that admits only numpy arrays and plain values, and every file or archive member
is checked for size before it is read (:data:`MAX_IMAGE_BYTES`, :data:`MAX_SPLIT_BYTES`,
:data:`MAX_PICKLE_BYTES`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bgd_experiments.io import atomic_torch_save

logger = logging.getLogger("bgd_experiments.data")

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
SPLITS = ("train", "test")
IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CACHE_ENV_VAR = "BGD_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/bgd-experiments"
EXAMPLE_ARCHIVE = "../shared/data/cifar10-jpeg.tar.gz"
# Read bounds, checked before any byte of a file or archive member is read. A 32x32 RGB image
# is 3,072 bytes of pixels; its PNG or JPEG file is under 5 KB, so 256 KiB admits any real
# encoding with room for metadata. A split's images together: CIFAR-100's 50,000 PNGs are
# about 110 MB; 512 MiB is the most one split may hold, so that a crafted archive cannot take
# more memory than that before it is refused.
MAX_IMAGE_BYTES = 256 * 2**10
MAX_SPLIT_BYTES = 512 * 2**20
# CIFAR's largest split has 50,000 images.
MAX_SPLIT_IMAGES = 200_000
# Bump when the cached payload changes meaning, so stale entries are ignored.
_CACHE_FORMAT = 2

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
OFFICIAL_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}


class DatasetError(ValueError):
    """The dataset is missing, or its files do not look like the requested CIFAR dataset."""


@dataclass
class ArrayDataset:
    """A whole labelled image set in memory: uint8 NCHW images and int64 labels."""

    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be (N,) with N = {self.images.shape[0]}, "
                f"got {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ArrayDataset:
        """The samples at ``indices`` (in that order), same class list."""
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.labels.device)
        return ArrayDataset(
            self.images.index_select(0, index), self.labels.index_select(0, index), self.classes
        )


# --------------------------------------------------------------------------------------------
# Locating the source


@dataclass(frozen=True)
class _TorchvisionLayout:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str
    label_key: str


_TORCHVISION = {
    "cifar10": _TorchvisionLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        meta_key="label_names",
        label_key="labels",
    ),
    "cifar100": _TorchvisionLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        meta_key="fine_label_names",
        label_key="fine_labels",
    ),
}


@dataclass(frozen=True)
class _Source:
    kind: str  # "torchvision" (folder of pickles), "folder" (tree root), "archive" (file)
    path: Path


def _validate_name(name: str) -> None:
    if name not in NUM_CLASSES:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {sorted(NUM_CLASSES)}")


def _validate_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not _is_hidden(name)


def _archive_named_for(name: str, filename: str) -> bool:
    # "cifar10-jpeg.tar.gz" is for cifar10, but "cifar100-png.tar.gz" must not match cifar10.
    return _is_archive(Path(filename)) and re.match(rf"{name}(?!\d)", filename.lower()) is not None


def _has_split_dirs(path: Path) -> bool:
    return any((path / split).is_dir() for split in SPLITS)


def _locate_source(name: str, root: Path) -> tuple[_Source | None, list[str]]:
    """The local source for ``name`` under ``root`` (None if none) and the places tried."""
    layout = _TORCHVISION[name]
    tried: list[str] = []
    if root.is_file():
        if _is_archive(root):
            return _Source("archive", root), tried
        raise DatasetError(
            f"{root} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)}) of an "
            f"image-folder tree <root>/{{train,test}}/<class>/*.png|jpg"
        )
    if not root.is_dir():
        tried.append(f"{root} (does not exist)")
        return None, tried
    for candidate in (root / layout.folder, root):
        tried.append(f"{candidate}/{layout.meta_file} (torchvision's files)")
        if (candidate / layout.meta_file).is_file():
            return _Source("torchvision", candidate), tried
    subfolders = sorted(
        entry for entry in root.iterdir() if entry.is_dir() and not _is_hidden(entry.name)
    )
    tree_candidates = [root, root / name]
    if len(subfolders) == 1:
        tree_candidates.append(subfolders[0])
    for candidate in tree_candidates:
        tried.append(f"{candidate}/{{train,test}}/ (image-folder tree)")
        if _has_split_dirs(candidate):
            return _Source("folder", candidate), tried
    tried.append(f"{root}/{name}*.tar.gz (archive of an image-folder tree)")
    archives = sorted(
        entry
        for entry in root.iterdir()
        if entry.is_file() and _archive_named_for(name, entry.name)
    )
    if len(archives) > 1:
        raise DatasetError(
            f"several {name} archives in {root}: {[a.name for a in archives]}; "
            f"pass the one to use as the dataset root"
        )
    if archives:
        return _Source("archive", archives[0]), tried
    return None, tried


def _missing_message(name: str, root: Path, tried: Sequence[str], cause: str = "") -> str:
    layout = _TORCHVISION[name]
    lines = [f"No {name} data found at {root}."]
    if cause:
        lines.append(f"Download failed: {cause}")
    if tried:
        lines.append("Looked for: " + "; ".join(tried) + ".")
    lines += [
        "Provide one of:",
        f"  1. a download through torchvision: set dataset.download=true (needs network; "
        f"files go to {root}/{layout.folder});",
        f"  2. a folder with torchvision's CIFAR files: <root>/{layout.folder}/ "
        f"(or root being that folder);",
        f"  3. an image-folder tree <root>/{{train,test}}/<class>/*.png|jpg, or a .tar.gz of "
        f"one such as {EXAMPLE_ARCHIVE} (as the root, or in the root folder).",
    ]
    return "\n".join(lines)


def _download(name: str, root: Path) -> None:
    """Let torchvision download and extract the official archive into ``root``."""
    import torchvision  # local import: only this path needs it

    dataset_class = {
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }[name]
    logger.info("downloading %s into %s through torchvision", name, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        dataset_class(root=str(root), train=True, download=True)
    except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
        raise DatasetError(_missing_message(name, root, [], cause=f"{exc!r}")) from exc


def _resolve_source(name: str, root: str | Path, download: bool) -> _Source:
    root_path = Path(root).expanduser()
    source, tried = _locate_source(name, root_path)
    if source is None and download:
        _download(name, root_path)
        source, tried = _locate_source(name, root_path)
    if source is None:
        raise DatasetError(_missing_message(name, root_path, tried))
    return source


# --------------------------------------------------------------------------------------------
# Cache


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$BGD_CACHE_DIR``, else the default."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    return Path(cache_dir).expanduser()


def cache_dir_problem(cache_dir: str | Path | None = None) -> str | None:
    """Why the cache folder cannot be written (one line), or None; nothing is made."""
    folder = resolve_cache_dir(cache_dir)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"the data cache {folder} cannot be written ({existing} is "
            f"{'not a folder' if not existing.is_dir() else 'read-only'}): set {CACHE_ENV_VAR} "
            "to a folder you can write"
        )
    return None


def _file_signature(path: Path) -> list[int]:
    """What changes whenever a file's bytes may have: its inode, size, mtime and ctime.

    ctime is in it because ``touch -d`` or a copy with preserved times can reset mtime, but
    nothing a user runs can set ctime back; the path is not, so a copy elsewhere is the same
    data (its digest is computed once more and agrees).
    """
    stat = path.stat()
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _content_signature(name: str, source: _Source) -> list[Any]:
    """The signature of every file whose bytes make up the source (no reading of its data)."""
    if source.kind == "archive":
        return [_file_signature(source.path)]
    return [[relative, *_file_signature(path)] for relative, path in _content_files(name, source)]


def _require_split_files(name: str, source: _Source, splits: Sequence[str]) -> None:
    """torchvision's folder: every file of ``splits`` is there (one split may load alone)."""
    if source.kind != "torchvision":
        return
    layout = _TORCHVISION[name]
    needed = [layout.meta_file]
    for split in splits:
        needed += layout.train_files if split == "train" else layout.test_files
    for filename in needed:
        if not (source.path / filename).is_file():
            raise DatasetError(
                f"incomplete torchvision {name} folder {source.path}: {filename} is missing"
            )


def _cache_path(name: str, split: str, key: str, cache_dir: Path) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"{name}-{split}-{digest}.pt"


def _cache_key(name: str, source: _Source, split: str, digest: str) -> str:
    """The decoded split's cache key: the sha256 of the source's bytes, not where it lies."""
    return json.dumps(
        {
            "format": _CACHE_FORMAT,
            "name": name,
            "split": split,
            "kind": source.kind,
            "sha256": digest,
        },
        sort_keys=True,
    )


def _read_cache(path: Path, key: str) -> ArrayDataset | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("key") != key:
            return None
        return ArrayDataset(payload["images"], payload["labels"], list(payload["classes"]))
    except Exception as exc:  # unreadable or foreign file: decode again and overwrite it
        logger.warning("ignoring unreadable cache file %s (%r)", path, exc)
        return None


# --------------------------------------------------------------------------------------------
# Decoding


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(
        entry for entry in split_dir.iterdir() if entry.is_dir() and not _is_hidden(entry.name)
    )


def _check_class_count(name: str, classes: Sequence[str], where: str) -> None:
    expected = NUM_CLASSES[name]
    if len(classes) != expected:
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise DatasetError(
            f"{where} has {len(classes)} classes ({shown}) but {name} has {expected}; "
            f"is this the right dataset/folder?"
        )


def _decode_image(blob: bytes, where: str) -> np.ndarray:
    """One image file's bytes as a (32, 32, 3) uint8 array; DatasetError if it is not that."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            if image.size != (IMAGE_SIZE, IMAGE_SIZE) or image.mode != "RGB":
                raise DatasetError(
                    f"{where} is a {image.size[0]}x{image.size[1]} {image.mode} image; "
                    f"CIFAR images must be {IMAGE_SIZE}x{IMAGE_SIZE} RGB"
                )
            return np.asarray(image)
    except DatasetError:
        raise
    except Exception as exc:  # PIL raises several types for broken files
        raise DatasetError(f"cannot decode image {where}: {exc}") from exc


def _decode_images(blobs: Sequence[bytes], names: Sequence[str]) -> torch.Tensor:
    """Decode image files into one uint8 (N, 3, 32, 32) tensor.

    Serial on purpose: one decode takes ~85 us and a thread pool measured slower here.
    """
    out = np.empty((len(blobs), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, (blob, where) in enumerate(zip(blobs, names, strict=True)):
        out[i] = _decode_image(blob, where)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _labelled_files(
    name: str, files: dict[str, list[str]], where: str
) -> tuple[list[str], list[str], torch.Tensor]:
    """From {class: [paths]}, the sorted classes, all paths sorted, and their labels."""
    classes = sorted(files)
    _check_class_count(name, classes, where)
    if tuple(classes) != OFFICIAL_CLASSES[name]:
        logger.warning(
            "%s: class folders are not the official %s names; labels follow their sorted order",
            where,
            name,
        )
    entries = sorted((path, label) for label, cls in enumerate(classes) for path in files[cls])
    labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
    return classes, [path for path, _ in entries], labels


def _read_folder_split(name: str, tree: Path, split: str) -> ArrayDataset:
    split_dir = tree / split
    if not split_dir.is_dir():
        raise DatasetError(f"image-folder tree {tree} has no {split}/ folder")
    files: dict[str, list[str]] = {}
    for class_dir in _class_dirs(split_dir):
        images = [str(p) for p in class_dir.iterdir() if p.is_file() and _is_image_name(p.name)]
        if not images:
            raise DatasetError(f"class folder {class_dir} holds no .png/.jpg images")
        files[class_dir.name] = images
    classes, paths, labels = _labelled_files(name, files, str(split_dir))
    budget = _ReadBudget(str(split_dir))
    blobs = []
    for path in paths:
        budget.admit(path, Path(path).stat().st_size)
        blobs.append(Path(path).read_bytes())
    return ArrayDataset(_decode_images(blobs, paths), labels, classes)


class _ReadBudget:
    """Refuses an image file or member too large to be an image, or a split too large to be
    CIFAR, before it is read."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.total = 0
        self.count = 0

    def admit(self, name: str, size: int) -> None:
        if size > MAX_IMAGE_BYTES:
            raise DatasetError(
                f"{name} is {size:,} bytes, too large for a 32x32 image file "
                f"({MAX_IMAGE_BYTES:,} at most); refusing to read it"
            )
        self.total += size
        self.count += 1
        if self.count > MAX_SPLIT_IMAGES:
            raise DatasetError(
                f"{self.where}: more than {MAX_SPLIT_IMAGES:,} images in one split, more than "
                "CIFAR holds; refusing to read further"
            )
        if self.total > MAX_SPLIT_BYTES:
            raise DatasetError(
                f"{self.where}: the images of one split exceed {MAX_SPLIT_BYTES // 2**20} MiB, "
                "more than CIFAR holds; refusing to read further"
            )


@dataclass
class _ArchiveImage:
    top: str | None  # the one extra top-level folder, if the archive has one
    split: str
    cls: str
    name: str  # member name, for sorting and messages


def _parse_member(member_name: str) -> _ArchiveImage | None:
    """Where an image member sits: [top/]split/class/file, or None if elsewhere."""
    parts = [p for p in member_name.split("/") if p not in ("", ".")]
    if not parts or not _is_image_name(parts[-1]) or any(_is_hidden(p) for p in parts):
        return None
    if len(parts) == 3 and parts[0] in SPLITS:
        return _ArchiveImage(None, parts[0], parts[1], member_name)
    if len(parts) == 4 and parts[1] in SPLITS:
        return _ArchiveImage(parts[0], parts[1], parts[2], member_name)
    return None


def _iter_archive(
    path: Path, wanted: Callable[[_ArchiveImage], bool]
) -> Iterator[tuple[_ArchiveImage, bytes]]:
    """Stream the archive's image members once, with the bytes of the ``wanted`` ones (else b"").

    Streaming ("r|*") reads the compressed file front to back exactly once; skipped members
    cost only their decompression.
    """
    unrecognised: list[str] = []
    budget = _ReadBudget(str(path))
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                image = _parse_member(member.name)
                if image is None:
                    if _is_image_name(member.name.rsplit("/", 1)[-1]):
                        unrecognised.append(member.name)
                    continue
                blob = b""
                if wanted(image):
                    budget.admit(f"{path}:{member.name}", member.size)
                    handle = archive.extractfile(member)
                    blob = handle.read() if handle is not None else b""
                yield image, blob
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read archive {path}: {exc}") from exc
    if unrecognised:
        logger.debug("%s: %d images outside [top/]split/class/", path, len(unrecognised))


def _archive_layout_error(path: Path, tops: set[str | None]) -> DatasetError:
    return DatasetError(
        f"unknown layout in archive {path}: expected images at train|test/<class>/<file> "
        f"with at most one folder above (e.g. cifar10/train/airplane/0000.jpg); found top "
        f"folders {sorted(str(t) for t in tops)}"
    )


def _read_archive_split(name: str, path: Path, split: str) -> ArrayDataset:
    files: dict[str, list[str]] = {}
    blobs: dict[str, bytes] = {}
    tops: set[str | None] = set()
    for image, blob in _iter_archive(path, lambda image: image.split == split):
        tops.add(image.top)
        if image.split == split:
            files.setdefault(image.cls, []).append(image.name)
            blobs[image.name] = blob
    if len(tops) > 1:
        raise _archive_layout_error(path, tops)
    if not files:
        raise DatasetError(
            f"archive {path} holds no images under [top/]{split}/<class>/; expected an "
            f"image-folder tree such as cifar10/{split}/airplane/0000.jpg"
        )
    classes, names, labels = _labelled_files(name, files, f"{path}:{split}/")
    images = _decode_images([blobs[n] for n in names], [f"{path}:{n}" for n in names])
    return ArrayDataset(images, labels, classes)


# What torchvision's CIFAR pickles hold: a dict of numpy arrays, lists, bytes, str and numbers.
# Anything else a pickle names (os.system, builtins.eval, ...) is refused before it is called.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocol 2.
        ("_codecs", "encode"),
    }
)
# The largest official file is CIFAR-100's train (about 155 MB); nothing bigger is read.
MAX_PICKLE_BYTES = 256 * 2**20


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused {module}.{name}: a CIFAR pickle holds only arrays, lists, dicts, "
                "bytes, strings and numbers"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise DatasetError(
                f"{path} is {size / 2**20:.0f} MiB, larger than any CIFAR file "
                f"({MAX_PICKLE_BYTES // 2**20} MiB at most); refusing to read it"
            )
        with open(path, "rb") as handle:
            # latin1 reads the official Python-2 pickles (as torchvision does).
            entry = _CifarUnpickler(handle, encoding="latin1").load()
    except DatasetError:
        raise
    except Exception as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        raise DatasetError(f"cannot read torchvision CIFAR file {path}: {first_line}") from None
    if not isinstance(entry, dict):
        raise DatasetError(f"{path} is not a CIFAR pickle (holds {type(entry).__name__})")
    # Keys may be bytes in pickles written by Python 2 with bytes keys.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_torchvision_classes(name: str, folder: Path) -> list[str]:
    layout = _TORCHVISION[name]
    meta = _unpickle(folder / layout.meta_file)
    if layout.meta_key not in meta:
        raise DatasetError(f"{folder / layout.meta_file} lacks {layout.meta_key!r}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[layout.meta_key]]
    _check_class_count(name, classes, str(folder / layout.meta_file))
    return classes


def _read_torchvision_split(name: str, folder: Path, split: str) -> ArrayDataset:
    layout = _TORCHVISION[name]
    classes = _read_torchvision_classes(name, folder)
    arrays, labels = [], []
    for filename in layout.train_files if split == "train" else layout.test_files:
        path = folder / filename
        entry = _unpickle(path)
        if "data" not in entry or layout.label_key not in entry:
            raise DatasetError(f"{path} lacks 'data' or {layout.label_key!r}")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
            raise DatasetError(f"{path}: data has shape {data.shape}, expected (N, 3072)")
        arrays.append(data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
        labels.extend(int(x) for x in entry[layout.label_key])
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    images = torch.from_numpy(np.concatenate(arrays)).contiguous()
    if label_tensor.numel() != images.shape[0]:
        raise DatasetError(f"{folder}: {images.shape[0]} images but {len(labels)} labels")
    if label_tensor.numel() and (label_tensor.min() < 0 or label_tensor.max() >= len(classes)):
        raise DatasetError(f"{folder}: labels outside 0..{len(classes) - 1}")
    return ArrayDataset(images, label_tensor, classes)


def _decode_split(name: str, source: _Source, split: str) -> ArrayDataset:
    """Read one split from its source: the slow path that the cache avoids."""
    if source.kind == "torchvision":
        return _read_torchvision_split(name, source.path, split)
    if source.kind == "folder":
        return _read_folder_split(name, source.path, split)
    return _read_archive_split(name, source.path, split)


# --------------------------------------------------------------------------------------------
# Content identity: what the data is, wherever it lies

# Hex digits of the sha256 kept in run records: enough to tell archives apart, short to read.
DIGEST_LENGTH = 16
_DIGEST_CHUNK = 1 << 20


def _hash_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_DIGEST_CHUNK):
            digest.update(chunk)


def _content_files(name: str, source: _Source) -> list[tuple[str, Path]]:
    """The files whose bytes make up a folder source, by relative name in a fixed order."""
    if source.kind == "torchvision":
        layout = _TORCHVISION[name]
        names = sorted({*layout.train_files, *layout.test_files, layout.meta_file})
        # A folder without some files is other content (and the split that needs them says so).
        return [
            (filename, source.path / filename)
            for filename in names
            if (source.path / filename).is_file()
        ]
    files = []
    for split in SPLITS:
        split_dir = source.path / split
        if not split_dir.is_dir():
            raise DatasetError(f"image-folder tree {source.path} has no {split}/ folder")
        for class_dir in _class_dirs(split_dir):
            files += [
                (f"{split}/{class_dir.name}/{p.name}", p)
                for p in class_dir.iterdir()
                if p.is_file() and _is_image_name(p.name)
            ]
    return sorted(files)


def _compute_digest(name: str, source: _Source) -> str:
    """sha256 of an archive's bytes, or of a folder's (relative name, size, bytes) sequence."""
    digest = hashlib.sha256()
    if source.kind == "archive":
        _hash_file(digest, source.path)
        return digest.hexdigest()
    for relative, path in _content_files(name, source):
        # Name and length delimit each file, so different splits of the bytes differ.
        digest.update(relative.encode() + b"\0" + path.stat().st_size.to_bytes(8, "little"))
        _hash_file(digest, path)
    return digest.hexdigest()


def _digest_key(name: str, signature: list[Any], source: _Source) -> str:
    return json.dumps(
        {"format": _CACHE_FORMAT, "digest": name, "kind": source.kind, "source": signature},
        sort_keys=True,
    )


def _changed_while_read(source: _Source) -> DatasetError:
    return DatasetError(f"{source.path} changed while it was being read; run again")


def source_digest(
    name: str,
    source: _Source,
    cache_dir: str | Path | None = None,
    signature: list[Any] | None = None,
) -> str:
    """The full sha256 hex digest of ``source``'s bytes.

    Hashing the 133 MB CIFAR-100 archive takes a few tenths of a second and every job of a
    sweep needs it, so the digest is kept in the cache folder under the files' signature
    (inode, size, mtime and ctime of each file): it is read back only while none of them has
    changed, and computed again otherwise.
    """
    from bgd_experiments.io import atomic_write_text

    if signature is None:
        signature = _content_signature(name, source)
    key = _digest_key(name, signature, source)
    path = resolve_cache_dir(cache_dir) / (
        f"digest-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    )
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass  # absent or unreadable: compute it again
    started = time.perf_counter()
    value = _compute_digest(name, source)
    if _content_signature(name, source) != signature:
        raise _changed_while_read(source)
    logger.info(
        "%s: sha256 of %s computed in %.2f s", name, source.path, time.perf_counter() - started
    )
    _write_cache_file(lambda: atomic_write_text(path, json.dumps({"key": key, "sha256": value})))
    return value


def _write_cache_file(write: Callable[[], None]) -> None:
    """A cache entry is a saving, not a result: a cache folder that cannot be written (read-only,
    full) costs the next run a decode or a hash, and is said once per write."""
    from bgd_experiments.io import WriteError

    try:
        write()
    except WriteError as error:
        logger.warning("not cached: %s", error)


def data_identity(
    name: str, root: str | Path, *, cache_dir: str | Path | None = None
) -> dict[str, str | None]:
    """What the data of ``root`` is, independent of where it lies on this machine.

    ``{"name": <archive or folder name>, "sha256": <first DIGEST_LENGTH hex digits>}``; the
    same archive copied elsewhere gives the same identity. ``sha256`` is None when ``root``
    holds no data here (e.g. a finished run re-checked on a machine without the archives).
    """
    _validate_name(name)
    root_path = Path(root).expanduser()
    try:
        source, _ = _locate_source(name, root_path)
    except DatasetError:
        source = None
    if source is None:
        return {"name": root_path.name, "sha256": None}
    try:
        digest: str | None = source_digest(name, source, cache_dir)[:DIGEST_LENGTH]
    except (DatasetError, OSError):
        digest = None  # unreadable here; check_dataset_source reports why when it matters
    return {"name": source.path.name, "sha256": digest}


def describe_data(dataset: str, identity: dict[str, Any], download: bool = False) -> str:
    """The provenance text of a data source: no machine path, only name and content hash."""
    digest = identity.get("sha256") or "unknown"
    return f"{dataset} from {identity.get('name')} (sha256 {digest})" + (
        " (torchvision download)" if download else ""
    )


def same_data(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two identities name the same data: same name, and same hash where both know it."""
    if old.get("name") != new.get("name"):
        return False
    return old.get("sha256") is None or new.get("sha256") is None or old["sha256"] == new["sha256"]


# --------------------------------------------------------------------------------------------
# Public entry points


def load_cifar(
    name: str,
    root: str | Path,
    split: str,
    *,
    download: bool = False,
    cache_dir: str | Path | None = None,
) -> ArrayDataset:
    """Load a CIFAR split as uint8 (N, 3, 32, 32) images with int64 labels.

    ``name`` is "cifar10" or "cifar100", ``split`` "train" or "test". The first load of an
    image folder/archive decodes it and caches the array; later loads read the cache.
    Raises :class:`DatasetError` when the data is missing or does not look like ``name``.
    """
    _validate_name(name)
    _validate_split(split)
    source = _resolve_source(name, root, download)
    _require_split_files(name, source, [split])
    signature = _content_signature(name, source)
    digest = source_digest(name, source, cache_dir, signature)
    key = _cache_key(name, source, split, digest)
    cache_path = _cache_path(name, split, key, resolve_cache_dir(cache_dir))
    started = time.perf_counter()
    cached = _read_cache(cache_path, key)
    if cached is not None:
        logger.info(
            "%s %s: %d images read from cache %s (%.2f s)",
            name,
            split,
            len(cached),
            cache_path,
            time.perf_counter() - started,
        )
        return cached
    logger.info(
        "%s %s: decoding %s (%s) once; cached afterwards", name, split, source.path, source.kind
    )
    dataset = _decode_split(name, source, split)
    # The digest above is the one of the bytes just decoded only if no file changed since.
    if _content_signature(name, source) != signature:
        raise _changed_while_read(source)
    decoded = time.perf_counter()
    _write_cache_file(
        lambda: atomic_torch_save(
            cache_path,
            {
                "key": key,
                "images": dataset.images,
                "labels": dataset.labels,
                "classes": list(dataset.classes),
            },
        )
    )
    logger.info(
        "%s %s: decoded %d images in %.1f s (cache %s)",
        name,
        split,
        len(dataset),
        decoded - started,
        cache_path,
    )
    return dataset


def _check_folder_tree(name: str, tree: Path) -> None:
    for split in SPLITS:
        split_dir = tree / split
        if not split_dir.is_dir():
            raise DatasetError(f"image-folder tree {tree} has no {split}/ folder")
        class_dirs = _class_dirs(split_dir)
        _check_class_count(name, [d.name for d in class_dirs], str(split_dir))
        for class_dir in class_dirs:
            first = next((p for p in class_dir.iterdir() if _is_image_name(p.name)), None)
            if first is None:
                raise DatasetError(f"class folder {class_dir} holds no .png/.jpg images")
        sample = next(p for p in sorted(class_dirs[0].iterdir()) if _is_image_name(p.name))
        _ReadBudget(str(split_dir)).admit(str(sample), sample.stat().st_size)
        _decode_image(sample.read_bytes(), str(sample))


def _check_archive(name: str, path: Path) -> None:
    classes: dict[str, set[str]] = {split: set() for split in SPLITS}
    tops: set[str | None] = set()
    samples: list[tuple[str, bytes]] = []
    # Names only (member data is skipped), except for the first image, checked for its size.
    for image, blob in _iter_archive(path, lambda _: not samples):
        tops.add(image.top)
        classes[image.split].add(image.cls)
        if not samples:
            samples.append((image.name, blob))
    if len(tops) > 1:
        raise _archive_layout_error(path, tops)
    for split in SPLITS:
        if not classes[split]:
            raise DatasetError(
                f"archive {path} holds no images under [top/]{split}/<class>/; expected an "
                f"image-folder tree such as cifar10/{split}/airplane/0000.jpg"
            )
        _check_class_count(name, sorted(classes[split]), f"{path}:{split}/")
    for member_name, blob in samples:
        _decode_image(blob, f"{path}:{member_name}")


def check_dataset_source(
    name: str,
    root: str | Path,
    download: bool = False,
    *,
    cache_dir: str | Path | None = None,
) -> None:
    """Raise :class:`DatasetError` unless ``root`` holds (or ``download`` can fetch) ``name``.

    Cheap: looks at folder/member names and one image, decodes nothing else; returns at once
    when both splits are already cached. With ``download=True`` and nothing local, downloads.
    """
    _validate_name(name)
    source = _resolve_source(name, root, download)
    cache_root = resolve_cache_dir(cache_dir)
    _require_split_files(name, source, SPLITS)
    digest = source_digest(name, source, cache_dir)
    keys = {split: _cache_key(name, source, split, digest) for split in SPLITS}
    if all(_cache_path(name, s, k, cache_root).is_file() for s, k in keys.items()):
        return
    if source.kind == "torchvision":
        _read_torchvision_classes(name, source.path)
    elif source.kind == "folder":
        _check_folder_tree(name, source.path)
    else:
        _check_archive(name, source.path)
