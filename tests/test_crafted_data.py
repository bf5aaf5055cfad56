"""Crafted and malformed data files (issue "Hardening II", section 3): every one gets one line naming
the file and the field, never a crash, a hang, a memory bomb or a segfault. CIFAR-10 batches, caches,
IDX files and the mnist_5k CSV, each built by hand in tmp_path. The cases that would crash the process
or allocate gigabytes before the fix run in a child process under RLIMIT_AS (its address space after
`import data` plus 1 GiB): a regression shows up as a failed test, never as a dead pytest or an
exhausted machine; each such case asserts the refusal of the check that comes before any allocation."""
from __future__ import annotations

import gzip
import json
import logging
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cache_format
import raw_formats
import data
from tests.test_data import fake_images, write_idx

REPO_ROOT = Path(data.__file__).resolve().parent
HEADROOM = 2 ** 30  # what a child may allocate beyond its address space after `import data, raw_formats`

# ------------------------------------------------------------------------------------------ helpers
CHILD = r"""
import json, logging, re, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import data
import raw_formats
warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("data").addHandler(Collect())
size = int(re.search(r"VmSize:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]), size + int(sys.argv[2])))
for kind, path, spec in json.loads(sys.argv[3]):
    warnings.clear()
    try:
        if kind == "cifar":
            raw_formats.read_cifar_batch(Path(path))
        elif kind == "idx":
            raw_formats.read_idx(Path(path))
        elif kind == "csv":
            raw_formats.read_mnist_csv(Path(path))
        else:
            result = data.read_valid_cache(Path(path), spec)
            print(json.dumps(["None" if result is None else "loaded", " | ".join(warnings)]), flush=True)
            continue
        print(json.dumps(["loaded", ""]), flush=True)
    except Exception as error:
        print(json.dumps([type(error).__name__, str(error)]), flush=True)
"""


def run_in_child(cases: list[tuple[str, Path, dict | None]]) -> list[tuple[str, str]]:
    """(outcome, message) of each case, loaded in one child process whose address space may grow by
    HEADROOM only: a segfault, a hang or an exhausted limit fails the calling test, and only it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO_ROOT), str(HEADROOM),
         json.dumps([[kind, str(path), spec] for kind, path, spec in cases])],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert completed.returncode == 0, f"the child died (rc {completed.returncode}): {completed.stderr[-3000:]}"
    outcomes = [tuple(json.loads(line)) for line in completed.stdout.splitlines()]
    assert len(outcomes) == len(cases), completed.stdout + completed.stderr[-3000:]
    return outcomes


def assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message and len(message) < 1000, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


class Reduce:
    """Pickles as a call of `func` on `args` (then a BUILD of `state`, if given): what a crafted file
    holds, written by the ordinary pickler."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def numpy_array(shape, dtype, raw: bytes, fortran: bool = False) -> Reduce:
    """A pickled numpy array as numpy writes it (_reconstruct, then BUILD), with any shape, dtype and
    bytes."""
    return Reduce(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                  (1, tuple(shape), dtype, fortran, raw))


def write_batch(path: Path, batch, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def cifar_refusal(path: Path, fragment: str) -> None:
    with pytest.raises(raw_formats.RawFileError) as error:
        raw_formats.read_cifar_batch(path)
    assert_one_line(str(error.value), f"{path} is not a CIFAR-10 batch", fragment, "refused")


# ------------------------------------------------------------------------------------ CIFAR batches
# A dtype whose one field holds objects (pointers) but whose flags say it holds none: numpy then takes
# the file's 8 bytes for the pointer, and reading the field dereferences 0x4141414141414141.
OBJECT_FIELD = Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))


def test_cifar_crashes_and_memory_bombs_are_refused_before_anything_is_made(tmp_path):
    """Before: the object-field dtype segfaulted the process (327 bytes); _reconstruct of a huge shape
    and ndarray() allocated 2.4 GB from a few hundred bytes, as did the C unpickler for a counted
    bytes object or a memo index the file only claims."""
    n = 2_400_000_000
    files = {
        "segfault": write_batch(tmp_path / "object_field", {
            b"data": numpy_array((1,), OBJECT_FIELD, b"\x41" * 8), b"labels": [0]}),
        "object dtype": write_batch(tmp_path / "object_dtype", {
            b"data": numpy_array((1,), np.dtype("O"), b"\x41" * 8), b"labels": [0]}),
        "huge _reconstruct": write_batch(tmp_path / "huge_reconstruct", {
            b"data": Reduce(np._core.multiarray._reconstruct, (np.ndarray, (n,), b"b")), b"labels": [0]}),
        "ndarray()": write_batch(tmp_path / "ndarray_call", {
            b"data": Reduce(np.ndarray, ((n,), "u1")), b"labels": [0]}),
        "claimed shape": write_batch(tmp_path / "claimed_shape", {
            b"data": numpy_array((n // 3072, 3072), np.dtype("u1"), b"\0" * 6), b"labels": [0]}),
        "BINBYTES8": tmp_path / "binbytes8",
        "memo": tmp_path / "memo",
        "FRAME": tmp_path / "frame",
    }
    files["BINBYTES8"].write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", n) + b"abc.")
    files["memo"].write_bytes(b"\x80\x02Nr" + struct.pack("<I", 2 ** 31) + b".")
    files["FRAME"].write_bytes(b"\x80\x04\x95" + struct.pack("<Q", n) + b"N.")
    assert all(path.stat().st_size < 400 for path in files.values())
    expected = {
        "segfault": "a numpy dtype 'V8' (a CIFAR-10 batch holds plain integers)",
        "object dtype": "a numpy dtype 'O8'",
        "huge _reconstruct": "numpy's _reconstruct other than as numpy pickles an array",
        "ndarray()": "it calls numpy.ndarray",
        "claimed shape": f"a numpy array of shape ({n // 3072}, 3072) and dtype uint8 needs {n} bytes, "
                         "but the file gives it 6",
        "BINBYTES8": f"expected {n} bytes in a bytes8, but only 4 remain",
        "memo": "memo index 2147483648 at byte 3, after 0 memoized objects",
        "FRAME": f"a frame of {n} bytes at byte 2, but only 2 follow",
    }
    outcomes = run_in_child([("cifar", path, None) for path in files.values()])
    for (case, path), (kind, message) in zip(files.items(), outcomes):
        assert kind == "RawFileError", (case, kind, message)
        assert_one_line(message, f"{path} is not a CIFAR-10 batch", expected[case], "refused")


def test_cifar_batch_fields_are_checked(tmp_path):
    images = fake_images(4, (3072,), 1)
    u1 = np.dtype("u1")
    cases = {
        "a list": ([1, 2], "it holds a list, not a dict"),
        "no data": ({b"labels": [0]}, "its b'data' is a NoneType, not a numpy array"),
        "a float array": ({b"data": images.astype(np.float64), b"labels": [0] * 4}, "a numpy dtype 'f8'"),
        "an image array": ({b"data": images.reshape(4, 3, 32, 32), b"labels": [0] * 4},
                           "a numpy array whose shape is not one or two sizes"),
        "other rows": ({b"data": images.reshape(8, 1536), b"labels": [0] * 8},
                       "its b'data' is a uint8 array of shape (8, 1536); allowed: uint8 of shape (N, 3072)"),
        "labels array": ({b"data": images, b"labels": np.arange(4)}, "its b'labels' is a numpy array, not a list"),
        "fewer labels": ({b"data": images, b"labels": [0, 1, 2]}, "3 labels for 4 images"),
        "label 10": ({b"data": images, b"labels": [0, 1, 10, 2]}, "label 2 is 10; allowed: integers 0..9"),
        "label -1": ({b"data": images, b"labels": [-1, 1, 1, 2]}, "label 0 is -1"),
        "a bool": ({b"data": images, b"labels": [0, True, 1, 2]}, "label 1 is a bool"),
        "a str": ({b"data": images, b"labels": [0, 1, "2", 3]}, "label 2 is a str"),
        "a huge int": ({b"data": images, b"labels": [0, 1, 2, 10 ** 5000]}, "label 3 is a huge integer"),
        "bytes too short": ({b"data": numpy_array((4, 3072), u1, images.tobytes()[:-1]), b"labels": [0] * 4},
                            "needs 12288 bytes, but the file gives it 12287"),
        "data is text": ({b"data": numpy_array((1, 1), u1, "x"), b"labels": [0]},
                         "a numpy array whose data is a str, not bytes"),
        "dtype with a subarray": ({b"data": numpy_array((1,), np.dtype(("u1", (3072,))), b"\0" * 3072),
                                   b"labels": [0]}, "a numpy dtype 'V3072'"),
        "posix.system": ({b"data": Reduce(os.system, ("true",)), b"labels": [0]},
                         "it refers to posix.system, which a CIFAR-10 batch never holds"),
    }
    for case, (batch, fragment) in cases.items():
        path = write_batch(tmp_path / case.replace(" ", "_"), batch, protocol=4)
        cifar_refusal(path, fragment)
    whole = write_batch(tmp_path / "whole", {b"data": images, b"labels": [0, 1, 2, 3]}, protocol=4)
    (tmp_path / "truncated").write_bytes(whole.read_bytes()[:5000])
    cifar_refusal(tmp_path / "truncated", "a frame of 12463 bytes at byte 2, but only 4989 follow")
    whole = write_batch(tmp_path / "whole", {b"data": images, b"labels": [0, 1, 2, 3]}, protocol=2)
    (tmp_path / "truncated2").write_bytes(whole.read_bytes()[:5000])
    cifar_refusal(tmp_path / "truncated2", "bytes in a unicodestring4, but only")
    (tmp_path / "empty").write_bytes(b"")
    cifar_refusal(tmp_path / "empty", "pickle exhausted before seeing STOP")


def test_cifar_dtype_states_other_than_numpys_are_refused(tmp_path):
    """The BUILD of numpy.dtype may set the byte order only: the states that add fields or item flags
    (how an object dtype is smuggled in) or come in another form are refused."""
    u1 = Reduce(np.dtype, ("u1", False, True), (3, "|", None, ("a",), {"a": (np.dtype("u1"), 0)}, 1, 1, 0))
    flags = Reduce(np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 63))
    form = Reduce(np.dtype, ("u1", False, True), (2, "|", None, None, None, -1, -1))
    order = Reduce(np.dtype, ("u1", False, True), (3, "!", None, None, None, -1, -1, 0))
    for name, dtype, fragment in (("fields", u1, "a numpy dtype with fields"),
                                  ("flags", flags, "a numpy dtype with item flags"),
                                  ("form", form, "a numpy dtype state of another form"),
                                  ("order", order, "a numpy dtype of byte order '!'")):
        path = write_batch(tmp_path / name, {b"data": numpy_array((1, 3072), dtype, b"\0" * 3072), b"labels": [0]})
        cifar_refusal(path, fragment)
    twice = Reduce(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                   (1, (1, 3072), np.dtype("u1"), False, b"\0" * 3072))
    payload = pickle.dumps({b"data": twice, b"labels": [0]}, protocol=2)
    ops = list(pickletools.genops(payload))
    at = max(i for i, (op, _, _) in enumerate(ops) if op.name == "BUILD")  # the array's BUILD
    assert ops[at - 1][0].name == "BINPUT"  # its state, memoized: push it again and BUILD once more
    end = ops[at][2] + 1
    payload = payload[:end] + b"h" + bytes([ops[at - 1][1]]) + b"b" + payload[end:]
    (tmp_path / "twice").write_bytes(payload)
    cifar_refusal(tmp_path / "twice", "a numpy array given a state twice")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_and_order_still_load(tmp_path, protocol):
    images = fake_images(6, (3072,), 3)
    labels = [np.int64(9), 0, 1, 2, 3, 4]  # numpy scalars (numpy.core.multiarray.scalar) and ints
    for name, array in (("c", images), ("fortran", np.asfortranarray(images))):
        path = write_batch(tmp_path / name, {b"data": array, b"labels": labels, b"filenames": [b"a"] * 6},
                           protocol=protocol)
        read_images, read_labels = raw_formats.read_cifar_batch(path)
        assert np.array_equal(read_images.reshape(6, -1), images) and read_images.flags.writeable
        assert read_labels.dtype == np.int64 and read_labels.tolist() == [9, 0, 1, 2, 3, 4]


def python2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch as Python 2's cPickle (protocol 2) and an old numpy wrote them: byte strings
    (SHORT_BINSTRING, BINSTRING), a memo numbered from 1, numpy.core, ints for dtype's align and copy."""
    n, width = images.shape
    raw = images.tobytes()
    return b"".join([
        b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04",
        b"K\x00\x85U\x01b\x87Rq\x05(K\x01M" + struct.pack("<H", n) + b"M" + struct.pack("<H", width) + b"\x86",
        b"cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tbU\x06labelsq\x08]q\x09(",
        b"".join(b"K" + bytes([label]) for label in labels), b"eu."])


def test_a_cifar_batch_as_python2_cpickle_wrote_it_loads(tmp_path):
    images = fake_images(5, (3072,), 8)
    (tmp_path / "batch").write_bytes(python2_batch(images, [9, 0, 3, 3, 1]))
    read_images, labels = raw_formats.read_cifar_batch(tmp_path / "batch")
    assert np.array_equal(read_images.reshape(5, -1), images) and labels.tolist() == [9, 0, 3, 3, 1]


def test_cifar_big_endian_labels_array_values_are_kept(tmp_path):
    labels = np.array([1, 2], dtype=">i4")
    path = write_batch(tmp_path / "big", {b"data": fake_images(2, (3072,), 4),
                                          b"labels": [labels[0], labels[1]]})
    assert raw_formats.read_cifar_batch(path)[1].tolist() == [1, 2]


def test_a_cifar_batch_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    path = write_batch(tmp_path / "batch", {b"data": fake_images(2, (3072,), 4), b"labels": [0, 1]})
    monkeypatch.setattr(raw_formats, "CIFAR_BATCH_MAX_BYTES", path.stat().st_size - 1)
    cifar_refusal(path, f"{path.stat().st_size} bytes; allowed: at most {path.stat().st_size - 1}")


def test_a_crafted_cifar_batch_stops_the_dataset_in_one_line(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(folder / name, {b"data": fake_images(10, (3072,), 5), b"labels": list(range(10))})
    write_batch(folder / "data_batch_3", {b"data": fake_images(10, (3072,), 5), b"labels": [12] * 10})
    with pytest.raises(raw_formats.RawFileError) as error:
        data.load_raw("cifar10", tmp_path, download=False)
    assert_one_line(str(error.value), "data_batch_3 is not a CIFAR-10 batch (label 0 is 12; allowed: integers "
                                      "0..9); refused")
    assert isinstance(error.value, data.DatasetUnavailableError)  # the entry scripts: `error: ...`, exit 2


# ------------------------------------------------------------------------------------------- caches
SPEC = {"format_version": 1, "name": "cm", "source": "mnist", "image_size": 10, "class_counts": [4] * 10,
        "split_seed": 7, "mean": [0.5], "std": [0.5]}


def valid_content() -> dict:
    """What build_cache_content makes for SPEC from a small fake MNIST."""
    labels = torch.arange(10).repeat(6)
    raw = data.RawSplits(torch.from_numpy(fake_images(60, (1, 28, 28), 0)), labels,
                         torch.from_numpy(fake_images(20, (1, 28, 28), 1)), torch.arange(10).repeat(2), "fake")
    return data.build_cache_content(SPEC, raw)


def save_cache(path: Path, content: dict, checksum: bool = True, **save_options) -> Path:
    """torch.save `content` with a checksum of its own tensors (so only the new checks can refuse it)."""
    if checksum and isinstance(content["meta"], dict):
        try:
            tensors = {key: content[key].detach().to_dense() for key in cache_format.CACHE_TENSORS}
            content["meta"]["checksum"] = cache_format.tensor_checksum(tensors)
        except AttributeError:  # not all are tensors: no checksum can match
            pass
    torch.save(content, path, **save_options)
    return path


def cache_refusal(path: Path, fragment: str, caplog) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data"):
        assert data.read_valid_cache(path, SPEC) is None
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1, lines
    assert_one_line(lines[0], f"cache {path} ", fragment, "rebuilding it")


def test_a_valid_cache_loads_as_it_did(tmp_path):
    content = valid_content()
    path = save_cache(tmp_path / "cache.pt", content, checksum=False)
    loaded = data.read_valid_cache(path, SPEC)
    assert loaded is not None and loaded["meta"] == content["meta"]
    for key in cache_format.CACHE_TENSORS:
        assert torch.equal(loaded[key], content[key]) and loaded[key].dtype == content[key].dtype


def test_caches_with_matching_checksums_but_crafted_content_are_refused(tmp_path, caplog):
    """Each is a cache whose checksum is right for its own tensors: before, most loaded (and labels out
    of range reached training), a meta of the wrong type stopped the run with a traceback."""
    def crafted(change):
        content = valid_content()
        change(content)
        return content

    def shared(content):
        both = torch.cat([content["train_labels"], content["test_labels"]])
        content["train_labels"], content["test_labels"] = both[:40], both[40:]

    cases = {
        "label 42": (lambda c: c["train_labels"].__setitem__(0, 42), "its train_labels hold 0..42; allowed: 0..9"),
        "label -1": (lambda c: c["test_labels"].__setitem__(3, -1), "its test_labels hold -1..9"),
        "counts": (lambda c: c["train_labels"].__setitem__(0, (int(c["train_labels"][0]) + 1) % 10),
                   "its train_labels count"),
        "float images": (lambda c: c.__setitem__("train_images", c["train_images"].float()),
                         "it refers to torch.FloatStorage, which a cache never holds"),
        "int32 labels": (lambda c: c.__setitem__("test_labels", c["test_labels"].int()),
                         "torch.IntStorage"),
        "12px images": (lambda c: c.__setitem__("train_images", torch.zeros(40, 1, 12, 12, dtype=torch.uint8)),
                        "its train_images is uint8 of shape [40, 1, 12, 12]; allowed: uint8 of shape "
                        "[40, 1, 10, 10]"),
        "3 channels": (lambda c: c.__setitem__("test_images", torch.zeros(20, 3, 10, 10, dtype=torch.uint8)),
                       "its test_images is uint8 of shape [20, 3, 10, 10]; allowed: uint8 of shape "
                       "[20, 1, 10, 10]"),
        "fewer labels": (lambda c: c.__setitem__("test_labels", c["test_labels"][:19].clone()),
                         "its test_labels is int64 of shape [19]; allowed: int64 of shape [20]"),
        "meta a str": (lambda c: c.__setitem__("meta", "cm"), "its meta is not a dict"),
        "meta nested": (lambda c: c["meta"].__setitem__("origin", [["deep"]]), "its meta is not a dict"),
        "meta extra": (lambda c: c["meta"].__setitem__("extra", 1), "its meta has keys"),
        "no meta origin": (lambda c: c["meta"].pop("origin"), "its meta has keys"),
        "a tensor as meta": (lambda c: c["meta"].__setitem__("origin", torch.zeros(3, dtype=torch.uint8)),
                             "its meta is not a dict"),
        "extra key": (lambda c: c.__setitem__("more", 1), "it holds keys"),
        "a list": (lambda c: c.__setitem__("train_labels", [0] * 40), "its train_labels is a list, not a tensor"),
        "transposed": (lambda c: c.__setitem__("train_images", c["train_images"].transpose(2, 3)),
                       "its train_images is not contiguous at the start of its storage"),
        "stride 0": (lambda c: c.__setitem__("train_images",
                                             torch.zeros(1, dtype=torch.uint8).expand(40, 1, 10, 10)),
                     "its train_images is not contiguous"),
        "offset": (lambda c: c.__setitem__("test_labels", (torch.arange(30) % 10)[10:]),
                   "its test_labels is not contiguous at the start of its storage (offset 10"),
        "bigger storage": (lambda c: c.__setitem__("test_labels", (torch.arange(40) % 10)[:20]),
                           "its test_labels of 20 elements has a storage of 40"),
        "shared storage": (shared, "is shared by two tensors"),
        "parameter": (lambda c: c.__setitem__("test_labels", torch.nn.Parameter(c["test_labels"].float())),
                      "torch._utils._rebuild_parameter"),
        "sparse": (lambda c: c.__setitem__("test_labels", c["test_labels"].to_sparse()),
                   "torch._utils._rebuild_sparse_tensor"),
    }
    for case, (change, fragment) in cases.items():
        path = save_cache(tmp_path / f"{case.replace(' ', '_')}.pt", crafted(change))
        cache_refusal(path, fragment, caplog)


def rewrite_zip(source: Path, target: Path, change_pickle=None, compression=zipfile.ZIP_STORED,
                extra_records: int = 0) -> Path:
    """`source`'s zip archive written again: data.pkl through change_pickle, all records compressed
    with `compression`, extra_records more small records."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", compression) as out:
        for info in archive.infolist():
            payload = archive.read(info)
            if info.filename.endswith("/data.pkl") and change_pickle:
                payload = change_pickle(payload)
            out.writestr(info.filename, payload)
        prefix = archive.namelist()[0].split("/")[0]
        for i in range(extra_records):
            out.writestr(f"{prefix}/extra/{i}", b"")
    return target


def test_cache_archives_other_than_torch_saves_are_refused(tmp_path, caplog):
    valid = save_cache(tmp_path / "valid.pt", valid_content(), checksum=False)
    cache_refusal(rewrite_zip(valid, tmp_path / "deflated.pt", compression=zipfile.ZIP_DEFLATED),
                  "a zip with compressed or encrypted records", caplog)
    cache_refusal(rewrite_zip(valid, tmp_path / "many.pt", extra_records=100),
                  f"records; allowed: at most {cache_format.CACHE_MAX_MEMBERS}", caplog)
    cache_refusal(save_cache(tmp_path / "legacy.pt", valid_content(), _use_new_zipfile_serialization=False),
                  "not a zip archive, the format torch.save writes", caplog)
    (tmp_path / "half.pt").write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    cache_refusal(tmp_path / "half.pt", "not a zip archive", caplog)
    oversized = rewrite_zip(valid, tmp_path / "pkl.pt", change_pickle=lambda p: p[:-1] + b" " * 2 ** 20 + b".")
    cache_refusal(oversized, f"no data.pkl of at most {2 ** 20} bytes", caplog)
    memo = rewrite_zip(valid, tmp_path / "memo.pt",
                       change_pickle=lambda p: b"\x80\x02Nr" + struct.pack("<I", 2 ** 31) + b".")
    cache_refusal(memo, "its data.pkl: memo index 2147483648", caplog)
    bytes8 = rewrite_zip(valid, tmp_path / "bytes8.pt",
                         change_pickle=lambda p: b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 40) + b"x.")
    cache_refusal(bytes8, "its data.pkl: expected 1099511627776 bytes in a bytes8", caplog)


def test_cache_memory_bombs_are_refused_before_torch_load(tmp_path):
    """Before: each of these allocated gigabytes from a file of kilobytes (20 GB for an expanded tensor
    made contiguous by the checksum, 10 GB for bytearray(n) or a dtype conversion that torch's
    weights_only unpickler admits), stopping the run or exhausting the machine."""
    n = 20 * 10 ** 9
    expanded = valid_content()
    expanded["train_images"] = torch.zeros(1, dtype=torch.uint8).expand(n // 100, 1, 10, 10)
    expanded["meta"]["checksum"] = "0" * 64  # its checksum cannot be computed without the 20 GB
    bytearray_bomb = valid_content()
    bytearray_bomb["meta"]["origin"] = Reduce(bytearray, (10 * 10 ** 9,))
    conversion = valid_content()
    conversion["test_images"] = Reduce(torch._utils._rebuild_device_tensor_from_cpu_tensor,
                                       (torch.zeros(1, dtype=torch.uint8).expand(10 ** 9), torch.float64, "cpu",
                                        False))
    files = {
        "expanded": save_cache(tmp_path / "expanded.pt", expanded, checksum=False),
        "bytearray": save_cache(tmp_path / "bytearray.pt", bytearray_bomb, checksum=False),
        "conversion": save_cache(tmp_path / "conversion.pt", conversion, checksum=False),
        "valid": save_cache(tmp_path / "valid.pt", valid_content()),
    }
    assert all(path.stat().st_size < 100_000 for path in files.values())
    expected = {
        "expanded": "its train_images is uint8 of shape [200000000, 1, 10, 10]; allowed: uint8 of shape "
                    "[40, 1, 10, 10]",
        "bytearray": "bytearray, which a cache never holds",
        "conversion": "it refers to torch._utils._rebuild_device_tensor_from_cpu_tensor",
    }
    outcomes = run_in_child([("cache", path, SPEC) for path in files.values()])
    for (case, path), (result, warning) in zip(files.items(), outcomes):
        if case == "valid":
            assert (result, warning) == ("loaded", ""), warning
            continue
        assert result == "None", (case, result, warning)
        assert_one_line(warning, f"cache {path} is not a valid cache", expected[case], "rebuilding it")


def test_a_crafted_cache_is_rebuilt_as_a_checksum_mismatch_is(compose, tmp_path, monkeypatch, caplog):
    """The policy of a checksum mismatch (a warning line, then the cache rebuilt over it in data_root)
    now covers every invalid cache; an embedded cache is never written: its rebuild goes to data_root."""
    cfg = compose("data=cm", "data.sample_size_per_class=4")
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", fake_images(60, (28, 28), 0), gzipped=False)
    write_idx(raw / "train-labels-idx1-ubyte", np.tile(np.arange(10), 6).astype(np.uint8), gzipped=False)
    write_idx(raw / "t10k-images-idx3-ubyte", fake_images(20, (28, 28), 1), gzipped=True)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.tile(np.arange(10), 2).astype(np.uint8), gzipped=True)
    spec = data.preprocessing_spec(cfg.data, 7)
    name = data.cache_file_name(spec)
    built = data.load_or_build_cache(cfg.data, tmp_path, 7, download=False)
    crafted = {**built, "meta": "not a dict"}
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    torch.save(crafted, embedded / name)
    embedded_bytes = (embedded / name).read_bytes()
    cache = data.cache_dir_of(tmp_path) / name
    torch.save(crafted, cache)
    monkeypatch.setattr(data, "EMBEDDED_DIR", embedded)
    with caplog.at_level(logging.WARNING, logger="data"):
        rebuilt = data.load_or_build_cache(cfg.data, tmp_path, 7, download=False)
    assert all(torch.equal(rebuilt[key], built[key]) for key in cache_format.CACHE_TENSORS)
    warnings = [record.getMessage() for record in caplog.records]
    assert any(f"cache {cache} is not a valid cache (its meta is not a dict" in line for line in warnings), \
        warnings
    assert any(f"cache {embedded / name} is not a valid cache" in line for line in warnings), warnings
    assert data.read_valid_cache(cache, spec) is not None  # rebuilt over the crafted file, as before
    assert (embedded / name).read_bytes() == embedded_bytes  # not written, not removed


# ---------------------------------------------------------------------------------------- IDX files
def idx_header(*shape: int) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def idx_refusal(path: Path, *fragments: str) -> None:
    with pytest.raises(raw_formats.RawFileError) as error:
        raw_formats.read_idx(path)
    assert_one_line(str(error.value), f"{path}: ", *fragments)


def test_idx_headers_that_claim_more_than_the_file_are_refused_unread(tmp_path):
    (tmp_path / "huge").write_bytes(idx_header(65536, 65536, 65536) + b"\0" * 10)
    idx_refusal(tmp_path / "huge", "an IDX file of shape [65536, 65536, 65536] claims 281474976710656 bytes of "
                                   f"data; allowed: at most {raw_formats.IDX_MAX_BYTES}")
    (tmp_path / "short").write_bytes(idx_header(60000, 28, 28) + b"\0" * 10)
    idx_refusal(tmp_path / "short", "an IDX file of shape [60000, 28, 28] must hold 47040016 bytes, not 26")
    (tmp_path / "long").write_bytes(idx_header(2, 2) + b"\0" * 5)
    idx_refusal(tmp_path / "long", "an IDX file of shape [2, 2] must hold 16 bytes, not 17")
    (tmp_path / "claim.gz").write_bytes(gzip.compress(idx_header(60000, 28, 28)))
    idx_refusal(tmp_path / "claim.gz", "must hold 47040016 bytes, more than a gzip file of")
    (tmp_path / "ndim0").write_bytes(bytes([0, 0, 8, 0]))
    idx_refusal(tmp_path / "ndim0", "an IDX file of 0 dimensions; allowed: 1 to 4")
    (tmp_path / "ndim200").write_bytes(bytes([0, 0, 8, 200]) + b"\0" * 800)
    idx_refusal(tmp_path / "ndim200", "an IDX file of 200 dimensions")
    (tmp_path / "header").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    idx_refusal(tmp_path / "header", "an IDX header of 3 dimensions needs 16 bytes, not 6")
    (tmp_path / "floats").write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4)
    idx_refusal(tmp_path / "floats", "not an unsigned-byte IDX file (magic 0xd01)")


def test_gzip_bombs_are_inflated_only_as_far_as_the_header_or_the_cap_needs(tmp_path):
    """Before: read_idx inflated a whole gzipped file, however large (2 GB here from 2 MB); the CSV
    stopped at its cap, but read it in Python's gzip module."""
    zeros = gzip.compress(b"\0" * 2 ** 24, compresslevel=9)  # 16 MB in 16 kB
    bomb = tmp_path / "bomb.gz"
    with open(bomb, "wb") as handle:  # 2 GB of zeros behind a header that claims 7,840 bytes
        handle.write(gzip.compress(idx_header(10, 28, 28) + b"\0" * 7840))
        for _ in range(128):
            handle.write(zeros)
    assert bomb.stat().st_size < 3 * 10 ** 6
    single = tmp_path / "single.gz"  # one member: 256 MB of zeros behind the same header
    with gzip.open(single, "wb", compresslevel=1) as handle:
        handle.write(idx_header(10, 28, 28))
        for _ in range(16):
            handle.write(b"\0" * 2 ** 24)
    text = gzip.compress(b"0," * 2 ** 23, compresslevel=9)  # 16 MB of CSV text in 16 kB
    csv = tmp_path / data.MNIST_CSV_FILE
    with open(csv, "wb") as handle:
        for _ in range(128):  # 2 GB
            handle.write(text)
    outcomes = run_in_child([("idx", bomb, None), ("idx", single, None), ("csv", csv, None)])
    for path, (kind, message) in zip((bomb, single), outcomes):
        assert kind == "RawFileError", (path, kind, message)
        assert_one_line(message, f"{path}: an IDX file of shape [10, 28, 28] must hold 7856 bytes, not more")
    kind, message = outcomes[2]
    assert kind == "RawFileError", message
    assert_one_line(message, f"{csv}: decompresses to more than {raw_formats.MNIST_CSV_MAX_BYTES} bytes")


def test_gzipped_idx_files_corrupted_or_padded(tmp_path):
    array = fake_images(3, (28, 28), 2)
    payload = idx_header(3, 28, 28) + array.tobytes()
    member = gzip.compress(payload)
    (tmp_path / "crc.gz").write_bytes(member[:-8] + bytes([member[-8] ^ 1]) + member[-7:])
    idx_refusal(tmp_path / "crc.gz", "unreadable (", "incorrect data check")
    (tmp_path / "truncated.gz").write_bytes(member[:-20])
    idx_refusal(tmp_path / "truncated.gz", "unreadable (the compressed stream is truncated)")
    (tmp_path / "junk.gz").write_bytes(member + b"junk")
    idx_refusal(tmp_path / "junk.gz", "unreadable (data after the gzip stream that is not another gzip member)")
    (tmp_path / "plain.gz").write_bytes(payload)
    idx_refusal(tmp_path / "plain.gz", "unreadable (", "incorrect header check")
    (tmp_path / "more.gz").write_bytes(gzip.compress(payload + b"\1"))
    idx_refusal(tmp_path / "more.gz", "must hold 2368 bytes, not more")
    (tmp_path / "many.gz").write_bytes(gzip.compress(payload) + gzip.compress(b"") * raw_formats.GZIP_MAX_MEMBERS)
    idx_refusal(tmp_path / "many.gz", f"unreadable (more than {raw_formats.GZIP_MAX_MEMBERS} gzip members)")
    # what gzip.open reads, read_idx reads alike: several members, zero padding after them
    split = gzip.compress(payload[:1000]) + b"\0" * 3 + gzip.compress(payload[1000:]) + b"\0" * 5000
    (tmp_path / "split.gz").write_bytes(split)
    with gzip.open(tmp_path / "split.gz") as handle:
        assert handle.read() == payload
    assert np.array_equal(raw_formats.read_idx(tmp_path / "split.gz").numpy(), array)


def test_idx_datasets_with_disagreeing_files_are_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    labels = np.tile(np.arange(10), 2).astype(np.uint8)

    def write(train_images=None, train_labels=None, test_images=None, test_labels=None):
        write_idx(raw / "train-images-idx3-ubyte", fake_images(20, (28, 28), 0) if train_images is None
                  else train_images, gzipped=False)
        write_idx(raw / "train-labels-idx1-ubyte", labels if train_labels is None else train_labels, gzipped=False)
        write_idx(raw / "t10k-images-idx3-ubyte", fake_images(10, (28, 28), 1) if test_images is None
                  else test_images, gzipped=False)
        write_idx(raw / "t10k-labels-idx1-ubyte", labels[:10] if test_labels is None else test_labels,
                  gzipped=False)

    cases = [
        (dict(train_labels=labels[:19]), "train-labels-idx1-ubyte: 19 labels, but", "holds 20 images"),
        (dict(test_images=fake_images(11, (28, 28), 1)), "t10k-labels-idx1-ubyte: 10 labels, but", "holds 11"),
        (dict(test_labels=np.array([0, 1, 2, 12, 4, 5, 6, 7, 8, 9], np.uint8)),
         "t10k-labels-idx1-ubyte: label 12 at index 3; allowed: 0..9"),
        (dict(train_images=fake_images(20, (784,), 0)), "train-images-idx3-ubyte: images of shape [20, 784]; "
                                                        "allowed: 3 dimensions"),
        (dict(train_labels=labels.reshape(20, 1)), "train-labels-idx1-ubyte: labels of shape [20, 1]"),
        (dict(test_images=fake_images(10, (32, 32), 1)), "t10k-images-idx3-ubyte: images of [32, 32] pixels, "
                                                         "but the training images"),
    ]
    for files, *fragments in cases:
        write(**files)
        with pytest.raises(raw_formats.RawFileError) as error:
            data.load_raw("mnist", tmp_path, download=False)
        assert_one_line(str(error.value), str(raw), *fragments)
    write()
    assert data.load_raw("mnist", tmp_path, download=False).train_images.shape == (20, 1, 28, 28)


# -------------------------------------------------------------------------------- the mnist_5k CSV
def test_csv_files_that_are_not_mnist_digits(tmp_path, monkeypatch):
    line = ",".join(["0"] * 784)
    member = gzip.compress(f"{line},3\n".encode())
    cases = {
        "junk": (member + b"junk", "unreadable (data after the gzip stream"),
        "crc": (member[:-8] + bytes([member[-8] ^ 1]) + member[-7:], "unreadable ("),
        "huge value": (gzip.compress(f"{line},99999999999999999999999\n".encode()),
                       "could not convert string '99999999999999999999999' to int64"),
        "float": (gzip.compress(f"{line},3.0\n".encode()), "could not convert string '3.0'"),
        "nul": (gzip.compress(f"{line},\0\n".encode()), "could not convert string"),
        "long row": (gzip.compress(f"{line},3,4\n".encode()), "786 fields per line, not lines of 785"),
    }
    for case, (payload, fragment) in cases.items():
        path = tmp_path / case.replace(" ", "_") / data.MNIST_CSV_FILE
        path.parent.mkdir()
        path.write_bytes(payload)
        with pytest.raises(raw_formats.RawFileError) as error:
            raw_formats.read_mnist_csv(path)
        assert_one_line(str(error.value), f"{path}: ", fragment)
    path = tmp_path / "big" / data.MNIST_CSV_FILE
    path.parent.mkdir()
    path.write_bytes(member)
    assert raw_formats.read_mnist_csv(path)[1].tolist() == [3]
    monkeypatch.setattr(raw_formats, "MNIST_CSV_MAX_BYTES", len(member) - 1)
    with pytest.raises(raw_formats.RawFileError) as error:
        raw_formats.read_mnist_csv(path)
    assert_one_line(str(error.value), f"{path}: a compressed file of {len(member)} bytes; allowed: at most")


# -------------------------------------------------------------------------------- random mutations
def mutate(rng, payload: bytes) -> bytes:
    """`payload` with a few random bytes changed, cut out, inserted, or set to a huge length."""
    out = bytearray(payload)
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        where, what = rng.randrange(len(out)), rng.random()
        if what < 0.6:
            out[where] = rng.randrange(256)
        elif what < 0.75:
            del out[where:where + rng.randrange(1, 16)]
        elif what < 0.9:
            out[where:where] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            out[where:where + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"])
    return bytes(out)


def test_randomly_mutated_files_load_or_are_refused_in_one_line(tmp_path):
    """300 seeded mutations of valid CIFAR batches (three pickle protocols), caches and IDX files, in
    the bounded child: each loads, or is refused in one line; nothing raises anything else or dies."""
    import random

    rng = random.Random(20240611)
    images = fake_images(3, (3072,), 6)
    save_cache(tmp_path / "seed.pt", valid_content())
    seeds = {("cifar", f"p{protocol}"): pickle.dumps({b"data": images, b"labels": [0, np.int64(1), 2]},
                                                     protocol=protocol) for protocol in (2, 4, 5)}
    seeds[("cache", "pt")] = (tmp_path / "seed.pt").read_bytes()
    seeds[("idx", "gz")] = gzip.compress(idx_header(3, 28, 28) + images.tobytes()[:2352])
    seeds[("idx", "raw")] = idx_header(3, 28, 28) + images.tobytes()[:2352]
    cases = []
    for i in range(300):
        (kind, name), seed = rng.choice(list(seeds.items()))
        path = tmp_path / f"{i}-{name}{'.gz' if name == 'gz' else ''}"
        path.write_bytes(mutate(rng, seed))
        cases.append((kind, path, SPEC if kind == "cache" else None))
    outcomes = run_in_child(cases)
    for (kind, path, _), (result, message) in zip(cases, outcomes):
        if kind == "cache":
            assert result in ("None", "loaded"), (path, result, message)
            if result == "None":
                assert_one_line(message, f"cache {path} ", "rebuilding it")
        else:
            assert result in ("RawFileError", "loaded"), (path, result, message)
            if result == "RawFileError":
                assert_one_line(message, str(path))
    assert sum(result != "loaded" for result, _ in outcomes) > 100  # most mutations are refused
