import gzip

import numpy as np
import pytest

from trainables.datasets import DatasetError, load_dataset
from trainables.datasets.builtin import read_idx


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist_folder(folder, n_train=12, n_test=5, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), compress)
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train), compress)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), compress)
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), compress)


def test_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", array, compress=False)
    assert (read_idx(tmp_path / "x") == array).all()


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_from_a_data_root(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    make_mnist_folder(folder, compress=layout == "flat")
    data = load_dataset("fashion_mnist", tmp_path)
    assert data.train_x.shape == (12, 1, 28, 28) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (5, 1, 28, 28) and data.test_y.dtype == np.int64
    assert len(data.classes) == 10


def test_mnist_loader_reads_the_same_format(tmp_path):
    make_mnist_folder(tmp_path / "MNIST" / "raw", compress=False)
    assert load_dataset("mnist", tmp_path).shape == (1, 28, 28)


def test_bad_data_roots_say_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match="no fashion_mnist idx files"):
        load_dataset("fashion_mnist", tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("fashion_mnist", tmp_path / "missing")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"junk")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"junk")
    with pytest.raises(DatasetError):
        load_dataset("fashion_mnist", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")


def test_digits_are_always_available_and_subset_works():
    data = load_dataset("digits", subset=100)
    assert data.train_x.shape == (100, 1, 16, 16) and len(data.test_x) == 360
    assert data.train_x.max() > 200  # scaled to the full uint8 range


def test_system_fashion_mnist_is_the_real_dataset():
    """Debian's dataset-fashion-mnist (installed by .ci/run and `make demo`)."""
    data = load_dataset("fashion_mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(data.test_y).tolist() == [1000] * 10
