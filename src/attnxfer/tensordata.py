"""The ``tensor`` data pipeline: a small image set decoded once, augmented a batch at a time.

Every image of the set is decoded once into one ``uint8`` array ``[N, H, W, 3]``. A training
batch is then cropped, resized, flipped and normalised as tensors, with no PIL and no per-image
Python work beyond drawing its random numbers. It is timm's training transform for the recipes it
accepts (random resized crop, horizontal flip, normalisation; not RandAugment or random erasing):

- the crop box is drawn by timm's algorithm (10 tries of area and log-aspect, then a centre crop);
- the box is resized with PIL's bicubic filter (``a = -0.5``, widened when shrinking, edge
  weights renormalised), horizontal pass then vertical, each rounded to 8 bits as PIL does, so a
  resized crop matches PIL's to within one grey level;
- the evaluation transform (resize, centre crop) is applied with PIL itself, once, at decode
  time, so evaluation batches equal the per-image pipeline's bit for bit.

Randomness is a pure function of ``(seed, epoch, sample index)``, as in the per-image pipeline,
so a run resumed mid-epoch, or one global batch split over several processes, sees the same
images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import AttnxferError

log = logging.getLogger(__name__)


class RaggedImages(AttnxferError):
    """The set's images differ in size: they cannot share one array."""


@dataclass
class DecodedImages:
    """A whole image set in memory: ``images [N, H, W, 3]`` uint8, ``targets [N]`` int64."""

    images: torch.Tensor
    targets: torch.Tensor
    dropped: int  # unreadable images left out (data.bad_images=skip)

    @property
    def nbytes(self) -> int:
        return self.images.numel()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, the same way in every data path: grey levels repeated in the
    three channels, palettes resolved, alpha dropped, CMYK converted, and 16-bit or 32-bit
    grey scaled to 8 bits (not clipped). Always a new, loaded image (``convert`` copies), so the
    file behind ``image`` may be closed afterwards."""
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image, dtype=np.int64)  # 16-bit grey (PNG) opens as I;16 or I
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def decode(dataset: Dataset, geometry: Callable | None = None) -> DecodedImages:
    """Decode every ``(PIL image, label)`` of ``dataset`` (``None``: unreadable, left out),
    after ``geometry`` (a PIL transform) when given; all must end the same size."""
    n = len(dataset)
    array: np.ndarray | None = None
    targets = np.empty(n, dtype=np.int64)
    kept = 0
    for index in range(n):
        sample = dataset[index]
        if sample is None:
            continue
        image, label = sample
        image = to_rgb(image)
        if geometry is not None:
            image = geometry(image)
        pixels = np.asarray(image)
        if array is None:
            array = np.empty((n, *pixels.shape), dtype=np.uint8)
        elif pixels.shape != array.shape[1:]:
            raise RaggedImages(
                f"images differ in size ({pixels.shape[1]}x{pixels.shape[0]} and "
                f"{array.shape[2]}x{array.shape[1]})"
            )
        array[kept] = pixels
        targets[kept] = label
        kept += 1
    if array is None:
        raise AttnxferError("the data set holds no readable image")
    images = torch.from_numpy(array[:kept]) if kept < n else torch.from_numpy(array)
    return DecodedImages(images, torch.from_numpy(targets[:kept]), n - kept)


# ---------------------------------------------------------------------------------------------
# PIL's bicubic resampling as matrices


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """PIL's bicubic kernel (Keys, ``a = -0.5``)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """``[B, out, size]``: row ``o`` of sample ``b`` holds PIL's bicubic weights of output pixel
    ``o`` when the input span ``[start_b, start_b + length_b)`` (of ``size`` pixels) is
    resized to ``out`` pixels. Float64."""
    start, length = start.double()[:, None, None], length.double()[:, None, None]
    scale = length / out  # input pixels per output pixel
    stretch = scale.clamp(min=1.0)  # PIL widens the kernel when shrinking (antialiasing)
    centre = start + (torch.arange(out, dtype=torch.float64)[None, :, None] + 0.5) * scale
    pixel = torch.arange(size, dtype=torch.float64)[None, None, :]
    weights = _cubic((pixel + 0.5 - centre) / stretch)
    inside = (pixel >= start) & (pixel < start + length)  # the crop: nothing outside it is read
    weights = torch.where(inside, weights, torch.zeros_like(weights))
    return weights / weights.sum(dim=-1, keepdim=True)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, out: int) -> torch.Tensor:
    """``images [B, H, W, 3]`` uint8, ``boxes [B, 4]`` as ``(top, left, height, width)`` ->
    ``[B, 3, out, out]`` uint8: each box resized as ``PIL.Image.crop(...).resize(...,
    BICUBIC)`` does (horizontal pass, 8-bit rounding, vertical pass, 8-bit rounding)."""
    _, H, W, _ = images.shape
    x = images.permute(0, 3, 1, 2).double()  # [B, 3, H, W]
    across = resize_weights(boxes[:, 1], boxes[:, 3], W, out)  # [B, out, W]
    down = resize_weights(boxes[:, 0], boxes[:, 2], H, out)  # [B, out, H]
    x = torch.einsum("bchw,bow->bcho", x, across)
    x = (x + 0.5).floor().clamp(0, 255)
    x = torch.einsum("bchw,boh->bcow", x, down)
    return (x + 0.5).floor().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# the random crop, drawn as timm draws it


def crop_box(
    rng: np.random.Generator, height: int, width: int, scale: tuple, ratio: tuple
) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random resized crop, by timm's rules
    (``RandomResizedCropAndInterpolation.get_params``) with ``rng`` as the source."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if w <= width and h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class CropFlip:
    """The training augmentation of the tensor pipeline: random resized crop, then flip."""

    size: int
    scale: tuple[float, float]
    hflip: float
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, images: torch.Tensor, rngs: list[np.random.Generator]) -> torch.Tensor:
        _, H, W, _ = images.shape
        boxes, flips = [], []
        for rng in rngs:
            boxes.append(crop_box(rng, H, W, self.scale, self.ratio))
            flips.append(rng.random() < self.hflip)
        out = resized_crops(images, torch.tensor(boxes), self.size)
        flip = torch.tensor(flips)[:, None, None, None]
        return torch.where(flip, out.flip(-1), out)


# ---------------------------------------------------------------------------------------------
# the dataset the loader reads


class TensorBatches(Dataset):
    """Decoded images served a whole batch at a time (``__getitems__``: the loader passes all
    indices of a batch at once, and ``collate`` passes the :class:`~attnxfer.data.Batch` on).

    ``augment=None``: the images are already at their final size (evaluation).
    """

    def __init__(
        self,
        store: DecodedImages,
        mean: tuple,
        std: tuple,
        augment: CropFlip | None = None,
        seed: int = 0,
    ) -> None:
        self.store = store
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.store.targets)

    def __getitems__(self, indices: list[int]):
        from .data import Batch

        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.store.images[index]
        if self.augment is None:
            pixels = images.permute(0, 3, 1, 2)
        else:
            rngs = [np.random.default_rng((self.seed, self.epoch, i)) for i in indices]
            pixels = self.augment(images, rngs)
        # as timm's ToTensor and Normalize do it, in float32
        x = pixels.float().div(255).sub(self.mean).div(self.std).contiguous()
        return Batch(x, self.store.targets[index], 0)

    def __getitem__(self, index: int):
        batch = self.__getitems__([index])
        return batch.images[0], int(batch.targets[0])
