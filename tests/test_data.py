"""Data sources, preprocessing and the cache: MNIST/CIFAR-10 loaders on small files in torchvision's
layout, the shipped cfm cache against a build from the raw Fashion-MNIST files, cache validation."""
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
    raw_test = data.read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
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
