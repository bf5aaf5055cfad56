"""The dataset cache's format and its checks: a cache file is untrusted (it may be crafted), so its zip
records and its pickle's tensors are checked (check_cache_archive, a restricted unpickler of stand-ins)
before torch.load(weights_only=True) reads it, then the tensors and labels torch.load made
(check_cache_tensors), then their checksum (tensor_checksum); InvalidCacheError says what is wrong.

It checks bytes and tensors; which cache to read, building it and where caches live are data.py's
(read_valid_cache, load_or_build_cache).
"""
from __future__ import annotations

import cpu_kernels  # noqa: F401  (before torch: the same CPU kernels on every x86-64 machine)

import hashlib
import io
import math
import os
import pickle
import zipfile

import torch

from raw_formats import is_plain_int, check_pickle_stream


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(key.encode() + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


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
                not is_plain_int(numel) or not 0 <= numel < 2 ** 62:
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
        if not isinstance(storage, _StorageRef) or not is_plain_int(offset) or not 0 <= offset < 2 ** 62 or any(
                type(v) is not tuple or len(v) > 8 or not all(is_plain_int(n) and 0 <= n < 2 ** 62 for n in v)
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


def _expected_shapes(spec: dict, test_count: int, channels: int) -> dict[str, tuple]:
    pixels = int(spec["image_size"])
    train_count = sum(int(c) for c in spec["class_counts"])
    return {"train_images": (train_count, channels, pixels, pixels), "train_labels": (train_count,),
            "test_images": (test_count, channels, pixels, pixels), "test_labels": (test_count,)}


def _shape_matches(size: tuple, expected: tuple) -> bool:
    return len(size) == len(expected) and all(e is None or n == e for n, e in zip(size, expected))


def check_cache_archive(handle, spec: dict, channels: int) -> tuple[dict, dict]:
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
    expected = _expected_shapes(spec, tensors["test_images"].size[0] if tensors["test_images"].size else -1,
                                channels)
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


def check_cache_tensors(content, meta: dict, refs: dict, num_classes: int, class_counts: list[int]) -> None:
    """InvalidCacheError unless torch.load made exactly the tensors check_cache_archive read from the
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
