"""Checked parsers of the raw dataset formats, untrusted input each: IDX files, gzipped or not (read_idx:
the header checked against the file's size and IDX_MAX_BYTES before anything is allocated, inflation
bounded by _GzipReader), CIFAR-10's pickled batches (read_cifar_batch: check_pickle_stream first, then a
restricted unpickler of stand-ins that admit plain integer arrays of exactly the bytes present; no code of
the file runs) and the MNIST digits' CSV (read_mnist_csv: bounded, every value checked). Anything else is
RawFileError in one line naming the file.

Bytes in, arrays out: which files make a dataset, caches and preprocessing are data.py's.
"""
from __future__ import annotations

import cpu_kernels  # noqa: F401  (before torch: the same CPU kernels on every x86-64 machine)

import io
import math
import pickle
import pickletools
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch


class DatasetUnavailableError(RuntimeError):
    """No source could provide a dataset (offline, nothing on disk)."""


class RawFileError(DatasetUnavailableError):
    """A raw dataset file that is not in its format: truncated, corrupted or crafted."""


MNIST_CSV_MAX_BYTES = 64 * 2 ** 20  # decompressed; the real file is 9.1 MB, so a larger one is a gzip bomb
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


def is_plain_int(value) -> bool:
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
        if not all(is_plain_int(v) for v in (elsize, alignment, flags)) or (elsize, alignment, flags) != (-1, -1, 0):
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
            not all(is_plain_int(n) and 0 <= n <= 2 ** 40 for n in shape):
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
        if cls is not self.ndarray or shape != (0,) or not is_plain_int(shape[0]) or _text(code, "code") != "b":
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
        if not is_plain_int(label) or not 0 <= label < num_classes:
            shown = label if is_plain_int(label) and abs(label) < 10 ** 6 else \
                "a huge integer" if is_plain_int(label) else f"a {kind(label)}"
            raise refuse(f"label {index} is {shown}; allowed: integers 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


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
