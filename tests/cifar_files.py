"""Test helper: write a tiny CIFAR-10 in the real python on-disk format, with a learnable signal.

The real batch files are Python 2 pickles, so their keys and strings are py2 ``str`` objects: they
load as ``bytes`` with ``encoding="bytes"`` and as ``str`` with ``encoding="latin1"`` (torchvision).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLASS_COLOURS", "LABEL_NAMES", "write_cifar10", "read_batch"]

LABEL_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Far-apart RGB colours, one per class: a linear probe on the mean colour separates them.
CLASS_COLOURS = np.array(
    [
        [220, 40, 40],
        [40, 220, 40],
        [40, 40, 220],
        [220, 220, 40],
        [220, 40, 220],
        [40, 220, 220],
        [235, 235, 235],
        [20, 20, 20],
        [240, 140, 20],
        [128, 128, 128],
    ],
    dtype=np.float64,
)

_FOLDER = "cifar-10-batches-py"
_PIXELS = 32 * 32


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us swap one opcode writer
    """Pickles ``bytes`` as py2 ``str`` (BINSTRING), the way the CIFAR-10 files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump(obj: Any, path: Path) -> None:
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uint8 rows of 3072 values (all red, then green, then blue), coloured by class plus noise."""
    n = len(labels)
    base = CLASS_COLOURS[labels][:, :, None]  # (n, 3, 1)
    noise = rng.normal(0.0, 25.0, size=(n, 3, _PIXELS))
    return np.clip(base + noise, 0, 255).astype(np.uint8).reshape(n, 3 * _PIXELS)


def _batch(label: str, labels: np.ndarray, data: np.ndarray, first: int) -> dict[bytes, Any]:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(y) for y in labels],
        b"data": data,
        b"filenames": [f"img_{first + i:05d}.png".encode() for i in range(len(labels))],
    }


def write_cifar10(root: str | Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """Writes ``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta.

    Labels cycle through the 10 classes (then get shuffled), and each image is its class colour
    plus Gaussian noise, so a small network can learn them. The train images are spread over the
    five batch files in order, as in the real data set.

    Args:
        root: Folder that will hold ``cifar-10-batches-py``.
        n_train: Number of training images over all five batches.
        n_test: Number of test images.
        seed: Seeds the labels and the noise.

    Returns:
        The ``cifar-10-batches-py`` folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / _FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = rng.permutation(np.arange(n_train) % 10)
    train_data = _images(train_labels, rng)
    chunks = np.array_split(np.arange(n_train), 5)
    for i, idx in enumerate(chunks, start=1):
        first = int(idx[0]) if len(idx) else 0
        batch = _batch(f"training batch {i} of 5", train_labels[idx], train_data[idx], first)
        _dump(batch, folder / f"data_batch_{i}")
    test_labels = rng.permutation(np.arange(n_test) % 10)
    _dump(
        _batch("testing batch 1 of 1", test_labels, _images(test_labels, rng), 0),
        folder / "test_batch",
    )
    meta = {
        b"num_cases_per_batch": max(len(c) for c in chunks),
        b"label_names": [name.encode() for name in LABEL_NAMES],
        b"num_vis": 3 * _PIXELS,
    }
    _dump(meta, folder / "batches.meta")
    return folder


def read_batch(path: str | Path) -> dict[bytes, Any]:
    """Reads a batch file the way the CIFAR-10 page documents it (``encoding="bytes"``)."""
    with Path(path).open("rb") as f:
        return pickle.load(f, encoding="bytes")
