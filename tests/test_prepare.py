"""``attnxfer prepare``: the real archives' layouts, rebuilt small, into ImageFolder layouts."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from attnxfer.config import DataConfig
from attnxfer.data import raw_dataset
from attnxfer.errors import AttnxferError
from attnxfer.prepare import cifar10_c, digits_shift, missing_data_hint, prepare


def _png(size=32, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _tar(path, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _cifar(source):
    files = {
        f"cifar10-jpeg/{split}/{c}/{i:04d}.jpg": _png(seed=i)
        for split in ("train", "test")
        for c in ("cat", "dog")
        for i in range(3)
    }
    _tar(source / "cifar10-jpeg" / "cifar10-jpeg-train-test.tar.gz", files)


def test_cifar10_jpeg_and_its_corrupted_copies(tmp_path):
    source, cache = tmp_path / "shared", tmp_path / "cache"
    _cifar(source)
    prepare("cifar10-jpeg", source, cache)
    test = raw_dataset(DataConfig(name="imagefolder", root=str(cache / "cifar10-jpeg")), "test")
    assert test.classes == ["cat", "dog"] and len(test) == 6
    prepare("cifar10-jpeg", source, cache)  # done: kept as it is
    a = cifar10_c(cache, per_class=2, corruptions=("gaussian_noise",), severities=(3,))
    assert [p.name for p in a] == ["gaussian_noise-3"]
    images = sorted((a[0] / "test").rglob("*.png"))
    assert len(images) == 4
    first = [p.read_bytes() for p in images]
    clean = np.asarray(Image.open(cache / "cifar10-jpeg" / "test" / "cat" / "0000.jpg"))
    assert np.abs(np.asarray(Image.open(images[0])).astype(int) - clean).mean() > 5
    # made again elsewhere: the same seed gives the same corrupted images
    (cache / "copy").mkdir()
    (cache / "copy" / "cifar10-jpeg").symlink_to(cache / "cifar10-jpeg")
    b = cifar10_c(cache / "copy", per_class=2, corruptions=("gaussian_noise",), severities=(3,))
    assert [p.read_bytes() for p in sorted((b[0] / "test").rglob("*.png"))] == first


def test_tiny_imagenet_drops_the_extra_classes_and_sorts_val(tmp_path):
    source, cache = tmp_path / "shared", tmp_path / "cache"
    wnids = ["n01443537", "n01629819", "n02480855"]  # the last is one of the two extras
    train = {
        f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG": _png(64, i)
        for w in wnids
        for i in range(2)
    }
    train["tiny-imagenet-200/train/.DS_Store"] = b"macOS"  # as in the real archive
    _tar(source / "tiny-imagenet-train" / "tiny-imagenet-200-train.tar.gz", train)
    notes = "val_0.JPEG\tn01629819\t0\t0\t1\t1\nval_1.JPEG\tn01443537\t0\t0\t1\t1\n"
    notes += "val_2.JPEG\tn02480855\t0\t0\t1\t1\n"
    val = {f"tiny-imagenet-200/val/images/val_{i}.JPEG": _png(64, 10 + i) for i in range(3)}
    val["tiny-imagenet-200/val/val_annotations.txt"] = notes.encode()
    _tar(source / "tiny-imagenet-val" / "tiny-imagenet-200-val.tar.gz", val)
    prepare("tiny-imagenet", source, cache)
    cfg = DataConfig(name="imagefolder", root=str(cache / "tiny-imagenet"))
    tr = raw_dataset(cfg, "train")
    va = raw_dataset(cfg, "val", tr.classes)
    assert tr.classes == wnids[:2] and len(tr) == 4
    assert [(p.name, y) for p, y in va.samples] == [("val_1.JPEG", 0), ("val_0.JPEG", 1)]


def test_digits_shift_sets(tmp_path):
    h5py = pytest.importorskip("h5py")
    source, cache = tmp_path / "shared", tmp_path / "cache"
    (source / "mnist-test").mkdir(parents=True)
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    with gzip.open(source / "mnist-test" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0" * 16 + images.tobytes())
    with gzip.open(source / "mnist-test" / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0" * 8 + bytes([7, 1, 7]))
    (source / "usps").mkdir()
    with h5py.File(source / "usps" / "usps.h5", "w") as f:
        f.create_dataset("test/data", data=np.full((2, 256), 0.5))
        f.create_dataset("test/target", data=np.array([3, 4]))
    mm = {"mnist_m/data/mnist_m/mnist_m_test/00000000.png": _png(32, 1)}
    mm["mnist_m/data/mnist_m/mnist_m_test_labels.txt"] = b"00000000.png 5\n"
    _tar(source / "mnist-m-test" / "mnist_m_test.tar.gz", mm)
    mnist, usps, mnist_m = digits_shift(source, cache)
    got = raw_dataset(DataConfig(name="imagefolder", root=str(mnist)), "test")
    assert got.classes == ["1", "7"] and len(got) == 3
    first = np.asarray(Image.open(mnist / "test" / "7" / "00000.png"))
    assert (first == images[0]).all()
    assert sorted(p.name for p in (usps / "test").iterdir()) == ["3", "4"]
    assert np.asarray(Image.open(usps / "test" / "3" / "00000.png")).max() == 128
    assert (mnist_m / "test" / "5" / "00000.png").is_file()


def test_imagenet_sample_photos(tmp_path):
    source, cache = tmp_path / "shared", tmp_path / "cache"
    tar = source / "imagenet-sample-100" / "imagenet-sample-images-100.tar"
    tar.parent.mkdir(parents=True)
    with tarfile.open(tar, "w") as t:
        for name in ("n01440764_tench.JPEG", "n01530575_brambling.JPEG"):
            data = _png(64)
            info = tarfile.TarInfo(f"imagenet-sample-images/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    prepare("imagenet-sample", source, cache)
    photos = raw_dataset(DataConfig(name="imagefolder", root=str(cache / "imagenet-sample")), "val")
    assert photos.classes == ["n01440764", "n01530575"] and len(photos) == 2


def test_missing_archives_and_unknown_names_are_clear(tmp_path):
    with pytest.raises(AttnxferError, match="pass --source"):
        prepare("cifar10-jpeg", tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(AttnxferError, match="unknown data set 'imagenet'"):
        prepare("imagenet", tmp_path, tmp_path / "cache")
    with pytest.raises(AttnxferError, match="prepare cifar10-jpeg' first"):
        prepare("cifar10-c", tmp_path, tmp_path / "cache")


def test_a_missing_data_folder_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = DataConfig(name="imagefolder", root="~/.cache/attnxfer/cifar10-jpeg")
    with pytest.raises(
        AttnxferError, match="train does not exist; make it with 'attnxfer prepare cifar10-jpeg'"
    ):
        raw_dataset(cfg, "train")
    assert "prepare digits-shift" in missing_data_hint(tmp_path / ".cache/attnxfer/mnist-m/test")
    # prepared, but not the split asked for; or not a prepared set at all: the layout to give
    (tmp_path / ".cache/attnxfer/cifar10-jpeg").mkdir(parents=True)
    for elsewhere in ("~/.cache/attnxfer/cifar10-jpeg/val", "~/.cache/attnxfer/mine", tmp_path):
        assert missing_data_hint(elsewhere) == (
            "point data.root at a folder of root/<split>/<class>/<image>"
        )
