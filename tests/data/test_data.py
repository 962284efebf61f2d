"""Tests for snas_ray.data: CIFAR-10 files written here, sklearn digits, synthetic, loaders."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_files import read_batch, write_cifar10
from torch.utils.data import SequentialSampler, TensorDataset

from snas_ray.cli import main
from snas_ray.config import DatasetConfig
from snas_ray.data import CIFAR10_MEAN, CIFAR10_STD, build_datasets, make_loader
from snas_ray.data import digits as data
from snas_ray.errors import DataError, SnasRayError

N_TRAIN, N_TEST = 20, 10


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=N_TRAIN, n_test=N_TEST, seed=3)
    return root


def _cifar(root: Path, **kw: object) -> DatasetConfig:
    kw = {"download": False, "val_fraction": 0.2, **kw}
    return DatasetConfig(name="cifar10", root=str(root), **kw)


def _normalised(rows: np.ndarray) -> torch.Tensor:
    """What ToTensor + Normalize make of uint8 CIFAR rows (N x 3072, channel-major)."""
    x = torch.as_tensor(rows.reshape(-1, 3, 32, 32), dtype=torch.float32) / 255.0
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _train_rows(root: Path) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    return np.concatenate([read_batch(folder / f"data_batch_{i}")[b"data"] for i in range(1, 6)])


def _row_of(img: torch.Tensor, table: torch.Tensor) -> int:
    hits = [i for i in range(len(table)) if torch.allclose(img, table[i], atol=1e-5)]
    assert len(hits) == 1
    return hits[0]


def test_cifar10_shapes_lengths_and_labels(cifar_root: Path) -> None:
    splits = build_datasets(_cifar(cifar_root))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, N_TEST)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    for ds in (splits.train, splits.val, splits.test):
        img, label = ds[0]
        assert img.shape == (3, 32, 32) and img.dtype == torch.float32
        assert isinstance(label, int) and 0 <= label < 10


def test_cifar10_test_pixels_match_file_bytes(cifar_root: Path) -> None:
    batch = read_batch(cifar_root / "cifar-10-batches-py" / "test_batch")
    expected = _normalised(batch[b"data"])
    splits = build_datasets(_cifar(cifar_root))
    for i in (0, N_TEST - 1):
        img, label = splits.test[i]
        torch.testing.assert_close(img, expected[i], atol=1e-5, rtol=0)
        assert label == batch[b"labels"][i]


def test_cifar10_val_comes_from_train_split_disjoint_and_unaugmented(cifar_root: Path) -> None:
    rows = _normalised(_train_rows(cifar_root))
    splits = build_datasets(_cifar(cifar_root, augment=False))
    train = {_row_of(splits.train[i][0], rows) for i in range(len(splits.train))}
    val = {_row_of(splits.val[i][0], rows) for i in range(len(splits.val))}
    assert not train & val and train | val == set(range(N_TRAIN))
    # Same split for the same split_seed; another seed moves it.
    again = build_datasets(_cifar(cifar_root, augment=False))
    assert {_row_of(again.val[i][0], rows) for i in range(len(again.val))} == val
    other = build_datasets(_cifar(cifar_root, augment=False, split_seed=1))
    assert {_row_of(other.val[i][0], rows) for i in range(len(other.val))} != val


def test_cifar10_val_is_deterministic_train_is_augmented(cifar_root: Path) -> None:
    splits = build_datasets(_cifar(cifar_root))  # augment on by default
    torch.manual_seed(0)
    assert torch.equal(splits.val[0][0], splits.val[0][0])
    reads = [splits.train[0][0] for _ in range(6)]
    assert any(not torch.equal(reads[0], r) for r in reads[1:])


def test_cifar10_cutout_zeroes_a_square(cifar_root: Path) -> None:
    splits = build_datasets(_cifar(cifar_root, augment=False, cutout=8))
    torch.manual_seed(0)
    for _ in range(5):
        zeros = int((splits.train[0][0] == 0).sum())
        # 3 channels x (a 4x4 corner at least, 8x8 at most)
        assert 3 * 16 <= zeros <= 3 * 64


def test_cifar10_val_on_test(cifar_root: Path) -> None:
    splits = build_datasets(_cifar(cifar_root, val_on_test=True))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (N_TRAIN, N_TEST, N_TEST)
    torch.testing.assert_close(splits.val[3][0], splits.test[3][0])


def test_cifar10_image_size_and_limit(cifar_root: Path) -> None:
    splits = build_datasets(_cifar(cifar_root, image_size=16, limit=3))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 3, 3)
    assert splits.image_size == 16
    assert splits.train[0][0].shape == splits.test[2][0].shape == (3, 16, 16)


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root") as info:
        build_datasets(_cifar(tmp_path / "nowhere"))
    assert "cifar-10-batches-py" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, SnasRayError)


def test_cifar10_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(*args: object, **kwargs: object) -> None:
        calls.append(kwargs)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DataError, match="data.root: CIFAR-10 not found"):
        build_datasets(_cifar(tmp_path, download=True))
    assert calls and calls[0]["md5"]  # the real download path, which verifies the archive


def test_cifar10_present_files_skip_download(
    cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download when the files are there")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", fail)
    assert len(build_datasets(_cifar(cifar_root, download=True)).test) == N_TEST


def test_cifar10_corrupt_batch(cifar_root: Path, tmp_path: Path) -> None:
    shutil.copytree(cifar_root, tmp_path, dirs_exist_ok=True)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3") as info:
        build_datasets(_cifar(tmp_path))
    assert str(info.value).startswith("data.root:")


def test_empty_validation_split_is_rejected(cifar_root: Path) -> None:
    with pytest.raises(DataError, match="data.val_fraction"):
        build_datasets(_cifar(cifar_root, val_fraction=0.01))


def test_unknown_dataset_name() -> None:
    cfg = DatasetConfig(name="synthetic")
    object.__setattr__(cfg, "name", "x")  # config.py would reject it; data.py must too
    with pytest.raises(DataError, match=r"data.name: unknown dataset 'x' \(allowed: cifar10"):
        build_datasets(cfg)


def test_digits_split_indices_disjoint_and_fixed() -> None:
    labels = np.arange(1797) % 10
    train, val, test = data.digits_indices(labels, 0.1, split_seed=0)
    assert (len(train), len(val), len(test)) == (1294, 144, 359)
    assert len(np.unique(np.concatenate([train, val, test]))) == 1797
    again = data.digits_indices(labels, 0.1, split_seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = data.digits_indices(labels, 0.1, split_seed=1)
    assert not np.array_equal(np.sort(test), np.sort(other[2]))


def test_digits_datasets() -> None:
    splits = build_datasets(DatasetConfig(name="digits"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1294, 144, 359)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 16)
    images, labels = splits.train.tensors
    assert images.shape == (1294, 3, 16, 16) and labels.dtype == torch.int64
    assert abs(images.mean().item()) < 1e-4 and abs(images.std().item() - 1) < 1e-3
    assert set(labels.tolist()) == set(range(10))
    again = build_datasets(DatasetConfig(name="digits"))
    assert torch.equal(again.val.tensors[0], splits.val.tensors[0])


def test_digits_image_size_limit_and_val_on_test() -> None:
    splits = build_datasets(DatasetConfig(name="digits", image_size=24, limit=8))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 8, 8)
    assert splits.train[0][0].shape == (3, 24, 24) and splits.image_size == 24
    ref = build_datasets(DatasetConfig(name="digits", val_on_test=True))
    assert (len(ref.train), len(ref.val)) == (1294 + 144, 359)
    assert torch.equal(ref.val.tensors[1], ref.test.tensors[1])


def test_synthetic_is_deterministic() -> None:
    cfg = DatasetConfig(name="synthetic", synthetic_size=16, image_size=8)
    a, b = build_datasets(cfg), build_datasets(cfg)
    assert (len(a.train), len(a.val), len(a.test)) == (16, 4, 4)
    assert a.train[0][0].shape == (3, 8, 8)
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert all(torch.equal(s, t) for s, t in zip(x.tensors, y.tensors, strict=True))
    c = build_datasets(dataclasses.replace(cfg, split_seed=1))
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    limited = build_datasets(dataclasses.replace(cfg, limit=3))
    assert torch.equal(limited.val.tensors[0], a.val.tensors[0][:3])


def _order(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(v) for (batch,) in loader for v in batch]


def test_make_loader_is_deterministic_for_a_seed() -> None:
    ds = TensorDataset(torch.arange(20))
    first = _order(make_loader(ds, 4, shuffle=True, seed=7))
    assert first == _order(make_loader(ds, 4, shuffle=True, seed=7))
    assert first != _order(make_loader(ds, 4, shuffle=True, seed=8))
    assert sorted(first) == list(range(20))
    assert _order(make_loader(ds, 4, shuffle=False, seed=7)) == list(range(20))
    assert len(make_loader(ds, 6, shuffle=True, seed=0, drop_last=True)) == 3


def test_make_loader_sampler_overrides_shuffle() -> None:
    ds = TensorDataset(torch.arange(10))
    loader = make_loader(ds, 3, shuffle=True, seed=0, sampler=SequentialSampler(ds))
    assert _order(loader) == list(range(10))


class _Planted:
    """Unpickling this runs ``touch MARKER``: what a hostile file in a shared data.root does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_cifar10_planted_pickle_is_refused_and_never_runs(
    cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    root, marker = tmp_path / "data", tmp_path / "ran"
    shutil.copytree(cifar_root, root)
    with (root / "cifar-10-batches-py" / name).open("wb") as f:
        pickle.dump({"data": _Planted(marker), "labels": [0], "label_names": []}, f, protocol=2)
    with pytest.raises(DataError, match=name) as info:
        build_datasets(_cifar(root))
    assert "system" in str(info.value) and "\n" not in str(info.value)
    # The same through the command line: one line, exit 2, and the code never ran.
    sets = ["data.name=cifar10", f"data.root={root}", "data.download=false", "device=cpu"]
    sets += ["space.layers=3", "space.init_channels=4", "search.epochs=1", "data.limit=8"]
    argv = ["search", "--out", str(tmp_path / "run")] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("snas-ray: error:")]
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in err
    assert not marker.exists()
