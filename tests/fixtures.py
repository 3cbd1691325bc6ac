"""Tiny on-disk datasets in the real release formats, for tests that must not download.

Each writer lays files out exactly as the official release (or the loader's documented
input) does, only with a handful of small images, and returns what a test needs to check.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# ../shared/data next to the repository (see pyproject's `shared_data` marker).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(path: Path, obj: dict) -> None:
    # The real files are Python-2 pickles; torchvision reads them with encoding="latin1",
    # which turns their str keys into Python-3 str keys, i.e. what a protocol-2 pickle of
    # a str-keyed dict written here gives back too.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows: 1024 red, then 1024 green, then 1024 blue values (row-major)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} with `per_batch` images each."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list] = {"train_data": [], "train_labels": [], "test_data": [], "test_labels": []}
    names = [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]
    for name in names:
        data = _cifar_rows(rng, per_batch)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batch_label = f"training batch {name[-1]} of 5" if name != "test_batch" else "testing batch 1 of 1"
        filenames = [f"img_{name}_{i}.png" for i in range(per_batch)]
        _dump(
            folder / name,
            {"batch_label": batch_label, "labels": labels, "data": data, "filenames": filenames},
        )
        part = "test" if name == "test_batch" else "train"
        out[f"{part}_data"].append(data)
        out[f"{part}_labels"].extend(labels)
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072},
    )
    return {k: (np.vstack(v) if k.endswith("data") else np.array(v)) for k, v in out.items()}


def write_cifar100(root: Path, n_train: int = 8, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-100-python/{train,test,meta}, fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = _cifar_rows(rng, n)
        fine = rng.integers(0, 100, size=n).tolist()
        coarse = [f // 5 for f in fine]
        _dump(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": coarse,
                "data": data,
            },
        )
        out[f"{name}_data"], out[f"{name}_labels"] = data, np.array(fine)
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
        },
    )
    return out


def write_image(path: Path, color: tuple[int, int, int], size: int = 8, mode: str = "RGB") -> None:
    """A small flat-colour image; the format follows the suffix (JPEG, PNG, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).convert(mode).save(path)


def write_image_tree(root: Path, layout: dict[str, dict[str, int]], ext: str = ".png") -> None:
    """root/<split>/<class>/<i>.ext, layout = {split: {class: count}}."""
    for split, classes in layout.items():
        for c, (name, count) in enumerate(classes.items()):
            for i in range(count):
                write_image(root / split / name / f"{i}{ext}", (40 * c, 100, 200))


SYNSETS = [
    "n01440764 tench, Tinca tinca",
    "n01443537 goldfish, Carassius auratus",
    "n01484850 great white shark, white shark, man-eater",
    "n01491361 tiger shark, Galeocerdo cuvieri",
]


def write_webvision(root: Path, ilsvrc: bool = True) -> dict[str, list]:
    """WebVision 1.0 layout: info/*.txt, google/q*/..., val_images_256/; ILSVRC val beside it.

    Train labels cycle over all 4 synsets, so loaders taking the first 2 classes must filter.
    """
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "synsets.txt").write_text("\n".join(SYNSETS) + "\n")
    train_lines, val_lines = [], []
    for i in range(8):
        rel = f"google/q{i % 4 + 1:04d}/{i + 1:08d}.jpg"
        write_image(root / rel, (30 * i, 0, 0))
        train_lines.append(f"{rel} {i % 4}")
    for i in range(4):
        name = f"val{i + 1:06d}.jpg"
        write_image(root / "val_images_256" / name, (0, 30 * i, 0))
        val_lines.append(f"{name} {(i + 1) % 4}")
    (info / "train_filelist_google.txt").write_text("\n".join(train_lines) + "\n")
    (info / "val_filelist.txt").write_text("\n".join(val_lines) + "\n")
    if ilsvrc:
        val = root.parent / "ILSVRC2012" / "val"
        for k, line in enumerate(SYNSETS):
            wnid = line.split()[0]
            for j in range(k + 1):  # 1, 2, 3, 4 images per class
                write_image(val / wnid / f"ILSVRC2012_val_{k:04d}{j:04d}.JPEG", (0, 0, 30 * j), mode="L")
    return {"train": train_lines, "val": val_lines}


def load_benchmark(name: str):
    """A script under benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
