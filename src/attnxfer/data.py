"""Datasets, timm transforms and reproducible sampling.

Augmentation randomness is a pure function of ``(seed, epoch, sample index)``: each sample is
transformed under its own seeded RNG. So a run resumed mid-epoch, or the same global batch split
over several processes, sees exactly the same augmented images, whatever ``num_workers`` is.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import Compose

from . import tensordata
from .config import DataConfig
from .errors import AttnxferError
from .prepare import missing_data_hint
from .tensordata import to_rgb

log = logging.getLogger(__name__)

TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
}
DATASETS = ("digits", "imagefolder", *TORCHVISION)


class RGBImages(Dataset):
    """A dataset of ``(PIL image, label)`` whose images all become RGB (:func:`to_rgb`), e.g.
    torchvision's grey-scale MNIST sets; every other attribute is the wrapped dataset's."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image, label = self.dataset[index]
        return to_rgb(image), label

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class DigitsDataset(Dataset):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped in its wheel.

    A fixed stratified split: every fifth image of each class is validation (355 images).
    """

    def __init__(self, split: str) -> None:
        from sklearn.datasets import load_digits

        if split not in ("train", "val"):
            raise AttnxferError(f"digits has splits 'train' and 'val', not {split!r}")

        digits = load_digits()
        images = (digits.images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
        rank = np.zeros(len(digits.target), dtype=int)
        for c in range(10):
            where = np.flatnonzero(digits.target == c)
            rank[where] = np.arange(len(where))
        keep = (rank % 5 == 4) if split == "val" else (rank % 5 != 4)
        self.images = images[keep]
        self.targets = digits.target[keep].tolist()
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return to_rgb(Image.fromarray(self.images[index])), self.targets[index]


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` with a policy for unreadable files.

    ``bad_images="fail"`` raises naming the file; ``"skip"`` returns ``None`` (dropped and counted
    by :func:`collate`) and logs the file once per worker.
    """

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp")

    def __init__(self, root: Path, classes: list[str] | None, bad_images: str) -> None:
        if not root.is_dir():
            raise AttnxferError(f"data folder {root} does not exist; {missing_data_hint(root)}")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not found:
            raise AttnxferError(f"data folder {root} has no class sub-folders (root/<class>/*)")
        if classes is not None and found != classes:
            only = sorted(set(found) ^ set(classes))[:5]
            raise AttnxferError(
                f"class folders in {root} differ from the training classes (e.g. {only}); "
                "train and val must have the same class folders"
            )
        self.classes = found
        self.samples = [
            (path, label)
            for label, name in enumerate(found)
            for path in sorted((root / name).rglob("*"))
            if path.suffix.lower() in self.EXTENSIONS
        ]
        if not self.samples:
            raise AttnxferError(
                f"data folder {root} holds no images ({', '.join(self.EXTENSIONS)})"
            )
        self.targets = [label for _, label in self.samples]
        self.bad_images = bad_images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int] | None:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                return to_rgb(img), label
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            if self.bad_images == "fail":
                raise AttnxferError(
                    f"cannot read image {path} ({e}); remove it or set data.bad_images=skip"
                ) from None
            log.warning("skipping unreadable image %s (%s)", path, e)
            return None


def _torchvision(cfg: DataConfig, train: bool) -> Dataset:
    import torchvision.datasets as tvd

    cls_name, folder = TORCHVISION[cfg.name]
    if cfg.root is None:
        raise AttnxferError(f"data.root must be set for {cfg.name} (where its files are or go)")
    cls = getattr(tvd, cls_name)
    try:
        dataset = cls(str(Path(cfg.root).expanduser()), train=train, download=cfg.download)
    except RuntimeError as e:
        hint = "" if cfg.download else " or set data.download=true when online"
        raise AttnxferError(
            f"{cfg.name} not found under {Path(cfg.root) / folder} ({e}){hint}"
        ) from None
    except OSError as e:  # download failed (offline)
        raise AttnxferError(
            f"could not download {cfg.name} to {cfg.root} ({e}); when offline, copy its files "
            f"to {Path(cfg.root) / folder}"
        ) from None
    return RGBImages(dataset)  # MNIST and Fashion-MNIST are grey-scale


def raw_dataset(cfg: DataConfig, split: str, classes: list[str] | None = None) -> Dataset:
    """The untransformed dataset of ``split``: a sub-folder for ``imagefolder``; for the
    built-in sets, ``train`` is the training split and anything else the test split."""
    if cfg.name == "digits":
        return DigitsDataset(split)
    if cfg.name == "imagefolder":
        if cfg.root is None:
            raise AttnxferError("data.root must be set for imagefolder (root/train, root/val)")
        return ImageFolderDataset(Path(cfg.root).expanduser() / split, classes, cfg.bad_images)
    if cfg.name in TORCHVISION:
        return _torchvision(cfg, split == "train")
    raise AttnxferError(f"unknown dataset {cfg.name!r}: choose one of {', '.join(DATASETS)}")


def training_subset(dataset: Dataset, size: int | None) -> Dataset:
    """The first ``size`` images of a fixed permutation (seed 0, whatever the run's seed), in
    dataset order: the same subset for every run, so runs differ only by their own seed."""
    if size is None:
        return dataset
    if not 0 < size <= len(dataset):
        raise AttnxferError(
            f"data.train_subset={size} must be between 1 and the training set's size "
            f"({len(dataset)})"
        )
    keep = np.sort(np.random.default_rng(0).permutation(len(dataset))[:size])
    return torch.utils.data.Subset(dataset, keep.tolist())


def normalisation(cfg: DataConfig, pretrained_cfg: dict | None) -> tuple[tuple, tuple]:
    """``(mean, std)``: the config's, else the teacher's pretrained config's, else ImageNet's."""
    pre = pretrained_cfg or {}
    mean = cfg.mean or pre.get("mean") or IMAGENET_DEFAULT_MEAN
    std = cfg.std or pre.get("std") or IMAGENET_DEFAULT_STD
    return tuple(mean), tuple(std)


def build_transform(cfg: DataConfig, train: bool, mean: tuple, std: tuple) -> Any:
    if not train:
        return create_transform(
            cfg.img_size,
            is_training=False,
            mean=mean,
            std=std,
            crop_pct=cfg.eval_crop_pct,
            interpolation="bicubic",
        )
    return create_transform(
        cfg.img_size,
        is_training=True,
        scale=tuple(cfg.scale),
        hflip=cfg.hflip,
        color_jitter=0.0,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.reprob,
        mean=mean,
        std=std,
        interpolation="bicubic",
    )


#: ``data.pipeline``: ``tensor`` decodes the set once and augments whole batches as tensors
#: (attnxfer.tensordata); ``pil`` runs timm's per-image transforms in the loader; ``auto`` takes
#: ``tensor`` when the recipe's augmentation allows it and the decoded set fits the budget below.
PIPELINES = ("auto", "tensor", "pil")
TENSOR_BUDGET_BYTES = 4 * 2**30


def _tensor_unsupported(cfg: DataConfig) -> str | None:
    """Why the tensor pipeline cannot run this recipe's training augmentation, or ``None``."""
    if cfg.auto_augment:
        return f"data.auto_augment={cfg.auto_augment!r} runs per image"
    if cfg.reprob > 0:
        return f"data.reprob={cfg.reprob} (random erasing) runs per image"
    return None


def _estimated_bytes(dataset: Dataset, geometry: Any = None) -> int | None:
    """Decoded size of ``dataset`` judged from its first readable image (``None``: none)."""
    for index in range(min(len(dataset), 8)):
        sample = dataset[index]
        if sample is not None:
            image = sample[0] if geometry is None else geometry(sample[0])
            return len(dataset) * image.size[0] * image.size[1] * 3
    return None


def _decoded(
    cfg: DataConfig, dataset: Dataset, what: str, geometry: Any = None
) -> tensordata.DecodedImages | None:
    """The decoded set, or ``None`` when ``pipeline=auto`` decides against decoding it."""
    if cfg.pipeline == "pil":
        return None
    size = _estimated_bytes(dataset, geometry)
    if cfg.pipeline == "auto" and (size is None or size > TENSOR_BUDGET_BYTES):
        log.info("data: %s images read per image (larger than the in-memory budget)", what)
        return None
    start = time.perf_counter()
    try:
        store = tensordata.decode(dataset, geometry)
    except tensordata.RaggedImages as e:
        if cfg.pipeline == "tensor":
            raise AttnxferError(
                f"data.pipeline=tensor needs images of one size, but the {what} {e}; "
                "use data.pipeline=pil"
            ) from None
        log.info("data: %s images read per image (%s)", what, e)
        return None
    n, h, w, _ = store.images.shape
    log.info(
        "data: %d %s images decoded into memory (%dx%d, %.0f MB) in %.1f s%s",
        n,
        what,
        w,
        h,
        store.nbytes / 2**20,
        time.perf_counter() - start,
        f"; {store.dropped} unreadable left out" if store.dropped else "",
    )
    return store


def training_set(
    cfg: DataConfig, dataset: Dataset, mean: tuple, std: tuple, seed: int
) -> tuple[Dataset, int]:
    """The augmented training set, by ``data.pipeline``, and how many images it left out."""
    reason = _tensor_unsupported(cfg)
    if reason is not None and cfg.pipeline == "tensor":
        raise AttnxferError(f"data.pipeline=tensor cannot augment this recipe: {reason}")
    store = None if reason else _decoded(cfg, dataset, "training")
    if store is None:
        return SeededTransform(dataset, build_transform(cfg, True, mean, std), seed), 0
    augment = tensordata.CropFlip(cfg.img_size, tuple(cfg.scale), cfg.hflip)
    return tensordata.TensorBatches(store, mean, std, augment, seed), store.dropped


def evaluation_set(cfg: DataConfig, dataset: Dataset, mean: tuple, std: tuple) -> Dataset:
    """The evaluation set, by ``data.pipeline`` (identical tensors either way)."""
    transform = build_transform(cfg, False, mean, std)
    steps = transform.transforms
    cut = next(i for i, t in enumerate(steps) if type(t).__name__.endswith("ToTensor"))
    store = _decoded(cfg, dataset, "evaluation", Compose(steps[:cut]))
    if store is None:
        return SeededTransform(dataset, transform, 0)
    return tensordata.TensorBatches(store, mean, std)


class SeededTransform(Dataset):
    """Applies ``transform`` to sample ``i`` of epoch ``e`` under an RNG seeded by (seed, e, i).

    Saves and restores the global RNGs (torch, numpy, python), so the caller's streams (drop path,
    mixup) are untouched even with ``num_workers=0``.
    """

    def __init__(self, dataset: Dataset, transform: Any, seed: int) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        sample = self.dataset[index]
        if sample is None:
            return None
        image, label = sample
        sample_seed = hash((self.seed, self.epoch, index)) & 0xFFFFFFFF
        # the CPU generator directly: torch.manual_seed also seeds every CUDA device, which
        # costs 0.2 ms per call, more than the whole transform of a small image
        gen = torch.default_generator
        torch_state, py_state, np_state = gen.get_state(), random.getstate(), np.random.get_state()
        gen.manual_seed(sample_seed)
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        try:
            return self.transform(image), label
        finally:
            gen.set_state(torch_state)
            random.setstate(py_state)
            np.random.set_state(np_state)


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    skipped: int  # unreadable samples dropped from this batch


def collate(samples: list | Batch) -> Batch:
    if isinstance(samples, Batch):  # the tensor pipeline makes whole batches itself
        return samples
    good = [s for s in samples if s is not None]
    skipped = len(samples) - len(good)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped)
    images = torch.stack([s[0] for s in good])
    targets = torch.tensor([s[1] for s in good], dtype=torch.long)
    return Batch(images, targets, skipped)


class ResumableSampler(Sampler[int]):
    """Shuffled (or ordered) indices for one process of ``world`` that can start mid-epoch.

    Epoch ``e``'s order is a permutation seeded by ``(seed, e)``; process ``rank`` takes every
    ``world``-th index of it, so the global batch of a 2-process run is the batch a 1-process run
    with twice the batch size sees. ``pad=True`` repeats indices so every rank has as many
    (training); ``pad=False`` does not (evaluation counts each image once).
    """

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        pad: bool = True,
    ) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world, self.pad = rank, world, pad
        self.epoch = 0
        self.start = 0  # samples of this rank to skip once (resume mid-epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            total = math.ceil(self.size / self.world) * self.world
            order += order[: total - self.size]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return len(self._indices()) - self.start
