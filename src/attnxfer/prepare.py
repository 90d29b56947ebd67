"""``attnxfer prepare``: turn the archives of ``../shared/data`` (or their downloads) into the
ImageFolder layouts the configs read, in a cache folder outside the repository.

- ``cifar10-jpeg``: ``CACHE/cifar10-jpeg/{train,test}/<class>/*.jpg``.
- ``tiny-imagenet``: ``CACHE/tiny-imagenet/{train,val}/<wnid>/`` (symbolic links into the
  extracted archives), the standard 200 classes only (the copy's two extra classes dropped).
- ``cifar10-c``: corrupted CIFAR-10 test sets, ``CACHE/cifar10-c/<corruption>-<severity>/test/
  <class>/*.png``, made with ``imagecorruptions`` under a fixed seed per image.
- ``digits-shift``: MNIST test, USPS test and MNIST-M test as ``CACHE/<name>/test/<digit>/*.png``.
- ``imagenet-sample``: the 100 ImageNet photos as ``CACHE/imagenet-sample/val/<wnid>/``.

Each target is written into a temporary folder and renamed into place when complete, so an
interrupted run never leaves a half-made data set that looks finished.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import AttnxferError

log = logging.getLogger(__name__)

DEFAULT_SOURCE = Path("../shared/data")
DEFAULT_CACHE = Path("~/.cache/attnxfer")
TINY_EXTRA_CLASSES = ("n02480855", "n10148035")  # added by the shared copy's author
#: corruption types (noise, blur, weather, digital) that work on 32x32 images
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "defocus_blur",
    "motion_blur",
    "fog",
    "contrast",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 3, 5)


def _need(path: Path, hint: str) -> Path:
    if not path.exists():
        raise AttnxferError(f"{path} does not exist; {hint}")
    return path


def _build(target: Path, make: Callable[[Path], None]) -> Path:
    """Run ``make(tmp)`` and rename ``tmp`` to ``target``; skip when ``target`` exists."""
    if target.exists():
        log.info("%s exists: kept", target)
        return target
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    tmp.rename(target)
    log.info("wrote %s", target)
    return target


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def cifar10_jpeg(source: Path, cache: Path) -> Path:
    archive = _need(
        source / "cifar10-jpeg" / "cifar10-jpeg-train-test.tar.gz",
        "pass --source, the folder holding cifar10-jpeg/",
    )

    def make(tmp: Path) -> None:
        _extract(archive, tmp)
        inner = tmp / "cifar10-jpeg"
        if inner.is_dir():  # the archive holds cifar10-jpeg/{train,test}
            for part in inner.iterdir():
                part.rename(tmp / part.name)
            inner.rmdir()

    return _build(cache / "cifar10-jpeg", make)


def tiny_imagenet(source: Path, cache: Path) -> Path:
    train_tar = _need(
        source / "tiny-imagenet-train" / "tiny-imagenet-200-train.tar.gz",
        "pass --source, the folder holding tiny-imagenet-train/",
    )
    val_tar = _need(
        source / "tiny-imagenet-val" / "tiny-imagenet-200-val.tar.gz",
        "pass --source, the folder holding tiny-imagenet-val/",
    )
    raw = cache / "tiny-imagenet-200"
    if not (raw / "train").is_dir():
        _extract(train_tar, cache)
    if not (raw / "val").is_dir():
        _extract(val_tar, cache)

    def make(tmp: Path) -> None:
        wnids = sorted(  # class folders only: the archive also holds macOS .DS_Store files
            p.name
            for p in (raw / "train").iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in TINY_EXTRA_CLASSES
        )
        (tmp / "train").mkdir()
        for wnid in wnids:
            (tmp / "train" / wnid).symlink_to((raw / "train" / wnid / "images").resolve())
            (tmp / "val" / wnid).mkdir(parents=True)
        keep = set(wnids)
        for line in (raw / "val" / "val_annotations.txt").read_text().splitlines():
            name, wnid = line.split("\t")[:2]
            if wnid in keep:
                (tmp / "val" / wnid / name).symlink_to((raw / "val" / "images" / name).resolve())

    return _build(cache / "tiny-imagenet", make)


def _save_split(tmp: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp / "test" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def digits_shift(source: Path, cache: Path) -> list[Path]:
    """MNIST, USPS and MNIST-M test sets as 28/16/32 px PNG ImageFolders (labels 0-9)."""
    mnist = _need(source / "mnist-test", "pass --source, the folder holding mnist-test/")
    usps = _need(source / "usps" / "usps.h5", "pass --source, the folder holding usps/")
    mnist_m = _need(
        source / "mnist-m-test" / "mnist_m_test.tar.gz",
        "pass --source, the folder holding mnist-m-test/",
    )

    def make_mnist(tmp: Path) -> None:
        with gzip.open(mnist / "t10k-images-idx3-ubyte.gz") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(mnist / "t10k-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8)
        _save_split(tmp, images, labels)

    def make_usps(tmp: Path) -> None:
        import h5py

        with h5py.File(usps) as f:
            data, labels = f["test"]["data"][:], f["test"]["target"][:]
        images = (np.clip(data, 0, 1) * 255).round().astype(np.uint8).reshape(-1, 16, 16)
        _save_split(tmp, images, labels)

    def make_mnist_m(tmp: Path) -> None:
        unpack = tmp / "raw"
        _extract(mnist_m, unpack)
        listing = next(unpack.rglob("*labels*.txt"))
        images, labels = [], []
        for line in listing.read_text().split("\n"):
            if not line.strip():
                continue
            name, label = line.split()
            with Image.open(listing.parent / "mnist_m_test" / name) as img:
                images.append(np.asarray(img.convert("RGB")))
            labels.append(int(label))
        shutil.rmtree(unpack)
        _save_split(tmp, np.stack(images), np.array(labels))

    return [
        _build(cache / "mnist", make_mnist),
        _build(cache / "usps", make_usps),
        _build(cache / "mnist-m", make_mnist_m),
    ]


def cifar10_c(
    cache: Path,
    per_class: int = 100,
    corruptions: tuple[str, ...] = CORRUPTIONS,
    severities: tuple[int, ...] = SEVERITIES,
    seed: int = 0,
) -> list[Path]:
    """Corrupted copies of the first ``per_class`` test images of each CIFAR-10 class; the RNG
    is seeded by (seed, corruption, severity, image) so every set is reproducible."""
    from imagecorruptions import corrupt

    test = _need(cache / "cifar10-jpeg" / "test", "run 'attnxfer prepare cifar10-jpeg' first")
    picks = [
        (c.name, path) for c in sorted(test.iterdir()) for path in sorted(c.iterdir())[:per_class]
    ]
    images = {}
    for label, path in picks:
        with Image.open(path) as img:
            images[path] = (label, np.asarray(img.convert("RGB")))
    out = []
    for ci, name in enumerate(corruptions):
        for severity in severities:

            def make(tmp: Path, name: str = name, severity: int = severity, ci: int = ci) -> None:
                for i, (label, image) in enumerate(images.values()):
                    np.random.seed((seed * 1000 + ci * 10 + severity) * 100_003 + i)
                    bad = corrupt(image, corruption_name=name, severity=severity)
                    folder = tmp / "test" / label
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.uint8(bad)[:32, :32]).save(folder / f"{i:05d}.png")

            out.append(_build(cache / "cifar10-c" / f"{name}-{severity}", make))
    return out


def imagenet_sample(source: Path, cache: Path) -> Path:
    """The 100 ImageNet photos as ``CACHE/imagenet-sample/val/<wnid>/<file>`` (for pictures)."""
    archive = _need(
        source / "imagenet-sample-100" / "imagenet-sample-images-100.tar",
        "pass --source, the folder holding imagenet-sample-100/",
    )

    def make(tmp: Path) -> None:
        _extract(archive, tmp / "raw")
        for photo in sorted((tmp / "raw").rglob("*.JPEG")):
            folder = tmp / "val" / photo.name.split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            photo.rename(folder / photo.name)
        shutil.rmtree(tmp / "raw")

    return _build(cache / "imagenet-sample", make)


TARGETS = ("cifar10-jpeg", "tiny-imagenet", "cifar10-c", "digits-shift", "imagenet-sample")
#: the folders that each target writes in the cache
WRITES = {
    "cifar10-jpeg": "cifar10-jpeg",
    "tiny-imagenet": "tiny-imagenet",
    "cifar10-c": "cifar10-c",
    "mnist": "digits-shift",
    "usps": "digits-shift",
    "mnist-m": "digits-shift",
    "imagenet-sample": "imagenet-sample",
}


def missing_data_hint(root: Path) -> str:
    """How to make a data folder that does not exist: the ``attnxfer prepare`` command that writes
    it when it lies in a prepared set not made yet, else the layout a data folder must have."""
    cache = DEFAULT_CACHE.expanduser().resolve()
    try:
        inside = Path(root).expanduser().resolve().relative_to(cache)
    except ValueError:
        inside = None
    if inside and inside.parts[0] in WRITES and not (cache / inside.parts[0]).exists():
        return f"make it with 'attnxfer prepare {WRITES[inside.parts[0]]}'"
    return "point data.root at a folder of root/<split>/<class>/<image>"


def prepare(name: str, source: Path = DEFAULT_SOURCE, cache: Path = DEFAULT_CACHE) -> None:
    if name not in TARGETS:
        raise AttnxferError(f"unknown data set {name!r} to prepare: choose {', '.join(TARGETS)}")
    source, cache = Path(source).expanduser(), Path(cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    if name == "cifar10-jpeg":
        cifar10_jpeg(source, cache)
    elif name == "tiny-imagenet":
        tiny_imagenet(source, cache)
    elif name == "cifar10-c":
        cifar10_c(cache)
    elif name == "digits-shift":
        digits_shift(source, cache)
    else:
        imagenet_sample(source, cache)
