"""The tensor data pipeline against timm's per-image PIL transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attnxfer import tensordata as TD
from attnxfer.config import DataConfig
from attnxfer.data import Batch, DigitsDataset, collate, evaluation_set, training_set
from attnxfer.errors import AttnxferError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _pil_resized_crop(pixels: np.ndarray, box, out: int) -> np.ndarray:
    top, left, h, w = box
    image = Image.fromarray(pixels).crop((left, top, left + w, top + h))
    return np.asarray(image.resize((out, out), Image.BICUBIC)).astype(int)


def _mine(pixels: np.ndarray, box, out: int) -> np.ndarray:
    crops = TD.resized_crops(torch.from_numpy(pixels)[None], torch.tensor([box]), out)
    return crops[0].permute(1, 2, 0).numpy().astype(int)


def test_resized_crop_matches_pil_on_the_cifar_recipe():
    """32 px images, timm's crop boxes at scale [0.35, 1]: PIL's bicubic resize to one grey
    level, and nearly every pixel exactly."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(100):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        box = TD.crop_box(rng, 32, 32, (0.35, 1.0), (3 / 4, 4 / 3))
        diffs.append(np.abs(_pil_resized_crop(pixels, box, 32) - _mine(pixels, box, 32)))
    diffs = np.concatenate([d.ravel() for d in diffs])
    assert diffs.max() <= 1 and (diffs == 0).mean() > 0.999


def test_resized_crop_matches_pil_when_shrinking_and_stretching():
    """Any box, any output size (PIL widens its kernel when shrinking): within 2 grey levels,
    and almost always exact."""
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(100):
        H, W = (int(v) for v in rng.integers(6, 70, 2))
        out = int(rng.integers(4, 64))
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        h, w = int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1))
        box = (int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w)
        diffs.append(np.abs(_pil_resized_crop(pixels, box, out) - _mine(pixels, box, out)).ravel())
    diffs = np.concatenate(diffs)
    assert diffs.max() <= 2 and (diffs == 0).mean() > 0.99


def test_crop_box_follows_timms_rules():
    rng = np.random.default_rng(2)
    boxes = np.array([TD.crop_box(rng, 32, 48, (0.3, 0.9), (3 / 4, 4 / 3)) for _ in range(2000)])
    top, left, h, w = boxes.T
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 48).all()
    )
    area = h * w / (32 * 48)
    assert area.min() > 0.25 and area.max() < 0.95  # the scale range, up to rounding
    assert (w / h).min() > 0.7 and (w / h).max() < 1.4
    # an image far outside the ratio range and a scale no crop can meet: the centre crop
    assert TD.crop_box(rng, 10, 100, (2.0, 3.0), (3 / 4, 4 / 3)) == (0, 43, 10, 13)


def _digits_config(**overrides) -> DataConfig:
    return DataConfig(**{"name": "digits", "img_size": 16, "scale": [0.3, 1.0], **overrides})


def test_training_batches_are_a_function_of_seed_epoch_and_index():
    """The same sample gets the same augmentation in any batch, and another one next epoch:
    resume and DDP see the same images."""
    data, _ = training_set(_digits_config(), DigitsDataset("train"), MEAN, STD, seed=3)
    assert isinstance(data, TD.TensorBatches)
    whole = data.__getitems__([5, 9, 11, 40])
    alone = data.__getitems__([11])
    assert torch.equal(whole.images[2], alone.images[0]) and whole.targets[2] == alone.targets[0]
    data.epoch = 1
    assert not torch.equal(data.__getitems__([11]).images[0], alone.images[0])
    data.epoch = 0
    assert torch.equal(data.__getitems__([11]).images[0], alone.images[0])
    assert collate(whole) is whole and isinstance(whole, Batch)
    assert whole.images.shape == (4, 3, 16, 16) and whole.images.dtype == torch.float32


def test_evaluation_batches_equal_the_per_image_pipeline_bit_for_bit():
    raw = DigitsDataset("val")
    fast = evaluation_set(_digits_config(pipeline="tensor"), raw, MEAN, STD)
    slow = evaluation_set(_digits_config(pipeline="pil"), raw, MEAN, STD)
    assert isinstance(fast, TD.TensorBatches) and not isinstance(slow, TD.TensorBatches)
    batch = fast.__getitems__(list(range(len(raw))))
    for i in (0, 17, len(raw) - 1):
        image, label = slow[i]
        assert torch.equal(batch.images[i], image) and batch.targets[i] == label


def test_training_crops_match_pil_through_the_whole_transform():
    """Flip off, scale 1 and a square image: the crop is the whole image, so the tensor
    pipeline's training batch is timm's training transform of it (to one grey level)."""
    cfg = _digits_config(scale=[1.0, 1.0], hflip=0.0)
    raw = DigitsDataset("train")
    fast, _ = training_set(cfg, raw, MEAN, STD, seed=0)
    slow, _ = training_set(
        _digits_config(scale=[1.0, 1.0], hflip=0.0, pipeline="pil"), raw, MEAN, STD, 0
    )
    got = fast.__getitems__([3]).images[0]
    want = slow[3][0]
    grey_level = 1 / 255 / min(STD)
    assert (got - want).abs().max() <= grey_level + 1e-6


def test_pipeline_choice_and_its_refusals():
    raw = DigitsDataset("train")
    per_image, _ = training_set(
        _digits_config(auto_augment="rand-m9-mstd0.5"), raw, MEAN, STD, seed=0
    )
    assert not isinstance(per_image, TD.TensorBatches)  # auto: RandAugment runs per image
    with pytest.raises(AttnxferError, match=r"cannot augment this recipe: data.reprob"):
        training_set(_digits_config(pipeline="tensor", reprob=0.25), raw, MEAN, STD, seed=0)
    with pytest.raises(AttnxferError, match=r"data.pipeline must be one of 'auto', 'tensor'"):
        _digits_config(pipeline="fast")  # refused when the section is made


class _Sizes(torch.utils.data.Dataset):
    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        return Image.new("L", self.sizes[i], 128), i % 2


def test_ragged_images_fall_back_or_are_refused():
    raw = _Sizes([(8, 8), (8, 8), (9, 8)])
    data, _ = training_set(_digits_config(), raw, MEAN, STD, seed=0)
    assert not isinstance(data, TD.TensorBatches)  # auto: read per image instead
    with pytest.raises(AttnxferError, match=r"needs images of one size.*data.pipeline=pil"):
        training_set(_digits_config(pipeline="tensor"), raw, MEAN, STD, seed=0)


def test_grey_images_become_rgb():
    store = TD.decode(_Sizes([(5, 7), (5, 7)]))
    assert store.images.shape == (2, 7, 5, 3) and store.targets.tolist() == [0, 1]
    assert (store.images == 128).all() and store.dropped == 0


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_every_image_mode_becomes_the_same_rgb_in_every_path(tmp_path, mode):
    """A file of each mode read by the image-folder set, decoded by the tensor pipeline and
    wrapped as a torchvision set gives one RGB picture: grey repeated, 16 bits scaled."""
    from attnxfer.data import ImageFolderDataset, RGBImages

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)  # 16-bit grey, same levels
    else:
        image = Image.fromarray(grey).convert(mode if mode != "1" else "L")
        if mode == "1":
            image = image.point(lambda v: 255 if v >= 128 else 0).convert("1")
            grey = np.where(grey >= 128, 255, 0).astype(np.uint8)
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    suffix = ".tif" if mode == "CMYK" else ".png"  # PNG has no CMYK
    image.save(folder / f"x{suffix}")
    read, _ = ImageFolderDataset(tmp_path / "train", None, "fail")[0]
    wrapped, _ = RGBImages([(image, 0)])[0]
    decoded = TD.decode(ImageFolderDataset(tmp_path / "train", None, "fail")).images[0].numpy()
    for pixels in (np.asarray(read), np.asarray(wrapped), decoded):
        assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
        if mode not in ("CMYK", "P"):  # CMYK's conversion and palettes round the levels
            np.testing.assert_array_equal(pixels, np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(np.asarray(read), decoded)


def _idx(path, array: np.ndarray) -> None:
    """An MNIST-style idx file: magic (0, 0, type 8 = ubyte, dims), sizes, then the bytes."""
    head = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(head + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
@pytest.mark.parametrize("pipeline", ["pil", "tensor"])
def test_grey_torchvision_sets_train_end_to_end(tmp_path, name, folder, pipeline):
    from helpers import TINY_STUDENT, cli

    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 32)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    out = tmp_path / "run"
    args = [*TINY_STUDENT, "transfer.mode=scratch", f"data.name={name}", f"data.root={tmp_path}"]
    assert cli("train", *args, f"data.pipeline={pipeline}", f"run.output={out}") == 0
    assert (out / "summary.json").is_file()
