"""The examples' data loading, splitting and models (no processes)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import data  # noqa: E402
import models  # noqa: E402
from cifar_files import write_cifar  # noqa: E402


def test_cifar_batches_are_read_in_the_standard_layout(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    x_train, y_train, x_test, y_test = data.load_cifar10(str(tmp_path))  # the parent works too
    assert x_train.shape == (30, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (4, 3, 32, 32)
    first = written["data_batch_1"]
    # pixel (row 2, column 5) of image 1: red at 2*32+5, green 1024 later, blue 2048 later
    assert [x_train[1, c, 2, 5] for c in range(3)] == [first[b"data"][1, c * 1024 + 69] for c in range(3)]
    assert y_train.tolist() == sum((written[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert y_test.tolist() == written["test_batch"][b"labels"]


def test_cifar_dataset_is_normalised_per_channel(tmp_path):
    write_cifar(tmp_path)
    ds = data.load("cifar10", data_dir=str(tmp_path))
    raw = data.load_cifar10(str(tmp_path))[0]
    expected = (raw[3, 1, 7, 9] / 255.0 - data.CIFAR_MEAN[1]) / data.CIFAR_STD[1]
    assert ds.x_train[3, 1, 7, 9].item() == pytest.approx(expected, rel=1e-6)
    assert ds.augment and ds.input_shape == (3, 32, 32) and ds.classes == 10


def test_missing_cifar_batches_are_named(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(str(tmp_path))
    assert str(info.value) == f"CIFAR-10 batches missing from {tmp_path}: data_batch_3"
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(None)
    assert "needs --data-dir" in str(info.value)


def test_augmentation_crops_a_shifted_window_and_flips():
    x = torch.arange(2 * 1 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32) + 1
    g = torch.Generator().manual_seed(3)
    out = data.augment(x, g)
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 9, (2,), generator=g), torch.randint(0, 9, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        window = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert torch.equal(out[i], window.flip(-1) if flip[i] else window)


def test_iid_partition_is_equal_disjoint_and_seeded():
    labels = np.arange(103) % 10
    shards = data.partition(labels, 4, [[0, 1], [2, 3]], 0.0, seed=1)
    assert [len(s) for s in shards] == [25] * 4
    assert len(set(np.concatenate(shards).tolist())) == 100
    again = data.partition(labels, 4, [[0, 1], [2, 3]], 0.0, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))


def test_fully_skewed_groups_see_only_their_classes():
    labels = np.arange(1000) % 10
    shards = data.partition(labels, 4, [[0, 1], [2, 3]], 1.0, seed=0)
    for rank, shard in enumerate(shards):
        classes = set(labels[shard].tolist())
        assert classes == ({0, 2, 4, 6, 8} if rank < 2 else {1, 3, 5, 7, 9}), (rank, classes)
    assert len({len(s) for s in shards}) == 1


def test_partly_skewed_groups_lean_to_their_classes():
    labels = np.arange(10000) % 10
    shards = data.partition(labels, 4, [[0, 1], [2, 3]], 0.5, seed=0)
    own = [np.mean(labels[s] % 2 == (0 if r < 2 else 1)) for r, s in enumerate(shards)]
    # home with probability 0.5, else a uniform group (home again half the time): 0.75
    assert all(abs(o - 0.75) < 0.03 for o in own), own


def test_bad_skew_is_refused():
    with pytest.raises(ValueError) as info:
        data.partition(np.zeros(4), 2, [[0, 1]], 1.5, seed=0)
    assert str(info.value) == "skew must be in [0, 1], got 1.5"


@pytest.mark.parametrize("name,count", [("resnet18", 11_173_962), ("vgg16", 14_728_266)])
def test_cifar_models_have_the_usual_sizes(name, count):
    model = models.make_model(name, (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_small_models_fit_their_inputs():
    assert models.make_model("mlp", (1, 8, 8), 10)(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert models.make_model("cnn", (1, 28, 28), 10)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError) as info:
        models.make_model("resnet18", (1, 8, 8), 10)
    assert str(info.value) == ("--model resnet18 is the CIFAR variant for 32x32 images, got "
                               "inputs of shape (1, 8, 8)")


def test_embedded_datasets_load():
    digits = data.load("digits", seed=0)
    assert digits.x_train.shape == (1438, 1, 8, 8) and digits.x_test.shape == (359, 1, 8, 8)
    mnist = data.load("mnist5k", seed=0)
    assert mnist.x_train.shape == (4000, 1, 28, 28) and len(mnist.y_test) == 1000
    assert float(mnist.x_train.max()) == 1.0 and set(mnist.y_train.tolist()) == set(range(10))
