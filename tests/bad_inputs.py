"""Every bad input we know of, and the one-line error it gets.

The tests (tests/test_bad_inputs.py) run each case; ``python tests/bad_inputs.py`` runs them too
and rewrites docs/bad-inputs.md from what the CLI really printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from helpers import tiny_vit  # tests/ is on the path: pytest's rootdir, or this script's folder
from PIL import Image
from safetensors.torch import save_file

from attnxfer.cli import main
from attnxfer.config import dump_config, load_config

TINY = [
    "student.arch=vit_tiny_patch16_224",
    "student.model_args={img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}",
    "data.img_size=16",
    "optim.epochs=1",
    "data.batch_size=32",
    "transfer.mode=scratch",
]


def _folder(root: Path, classes=("a", "b"), val_classes=None) -> Path:
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c in names:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (9, 9, 9)).save(root / split / c / "0.png")
    return root


def _ragged(root: Path) -> Path:
    _folder(root)
    Image.new("RGB", (20, 12), (9, 9, 9)).save(root / "train" / "a" / "1.png")
    return root


def _non_empty(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    return folder


def _teacher(tmp: Path, depth: int = 2) -> Path:
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=depth, num_heads=2, num_classes=0)
    save_file(tiny_vit("vit", **args).state_dict(), tmp / f"t{depth}.safetensors")
    meta = {"architecture": "vit_tiny_patch16_224", "args": args}
    (tmp / f"t{depth}.json").write_text(json.dumps(meta))
    return tmp / f"t{depth}.safetensors"


def _other_arch_run(tmp: Path) -> Path:
    narrow = "{img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2}"
    main(["train", *TINY, f"run.output={tmp / 'other'}", f"student.model_args={narrow}"])
    return tmp / "other"


def _foreign_cell(sweep: Path) -> Path:
    """A sweep folder whose cell ``mode=scratch/seed0`` holds a finished run started by hand
    with another learning rate than the sweep's."""
    run = sweep / "mode=scratch" / "seed0"
    run.mkdir(parents=True)
    dump_config(load_config([], [*TINY, "optim.lr=0.1", f"run.output={run}"]), run / "config.yaml")
    (run / "summary.json").write_text('{"val_top1": 50.0}')
    return sweep


def _mkdirs(path: Path, root: Path) -> Path:
    path.mkdir(parents=True)
    return root


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _state_dict_file(path: Path) -> Path:
    torch.save(tiny_vit("vit").state_dict(), path)
    return path


@dataclass
class Case:
    what: str  # the bad input, in words
    argv: Callable[[Path], list[str]]  # command line, given a fresh temporary folder
    expect: str  # a piece of the message


def _copy_export(t: Path) -> list[str]:
    main(
        [
            "train",
            *TINY,
            "transfer.mode=copy",
            f"teacher.source={_teacher(t)}",
            f"run.output={t / 'c'}",
        ]
    )
    return ["export", str(t / "c"), str(t / "out")]


CASES: list[Case] = [
    Case(
        "data folder does not exist",
        lambda t: ["train", *TINY, "data.name=imagefolder", f"data.root={t / 'nowhere'}"],
        "data folder",
    ),
    Case(
        "data folder has no class sub-folders",
        lambda t: [
            "train",
            *TINY,
            "data.name=imagefolder",
            f"data.root={_mkdirs(t / 'e' / 'train', t / 'e')}",
        ],
        "has no class sub-folders",
    ),
    Case(
        "class folders differ between train and val",
        lambda t: [
            "train",
            *TINY,
            "data.name=imagefolder",
            f"data.root={_folder(t / 'd', val_classes=('a', 'c'))}",
        ],
        "differ from the training classes",
    ),
    Case(
        "data folder holds no images",
        lambda t: [
            "train",
            *TINY,
            "data.name=imagefolder",
            f"data.root={_mkdirs(t / 'n' / 'train' / 'a', t / 'n')}",
        ],
        "holds no images",
    ),
    Case(
        "unknown dataset name",
        lambda t: ["train", *TINY, "data.name=imagenet22k"],
        "data.name must be one of 'digits'",
    ),
    Case(
        "torchvision dataset not downloaded (offline)",
        lambda t: ["train", *TINY, "data.name=cifar10", f"data.root={t}"],
        "cifar10 not found under",
    ),
    Case(
        "unknown student architecture",
        lambda t: ["train", *TINY, "student.arch=vit_gigantic_patch3"],
        "student.arch must be a timm model name",
    ),
    Case(
        "unknown teacher name",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            "teacher.source=vit_nonexistent_patch3",
        ],
        "unknown teacher 'vit_nonexistent_patch3'",
    ),
    Case(
        "teacher is not a ViT",
        lambda t: ["train", *TINY, "transfer.mode=distill", "teacher.source=resnet18"],
        "is a ResNet, not a timm VisionTransformer",
    ),
    Case(
        "teacher file is not a checkpoint",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_text(t / 'x.pth', 'hello')}",
            "teacher.arch=vit_tiny_patch16_224",
        ],
        "is not a checkpoint torch can read",
    ),
    Case(
        "teacher file without architecture",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_state_dict_file(t / 'w.pth')}",
        ],
        "cannot tell the architecture",
    ),
    Case(
        "teacher checkpoint keys do not fit its architecture",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_teacher(t)}",
            "teacher.model_args={depth: 3}",
        ],
        "missing keys",
    ),
    Case(
        "mode needs a teacher but none given",
        lambda t: ["train", *TINY, "transfer.mode=copy"],
        "needs teacher.source",
    ),
    Case(
        "unknown transfer mode",
        lambda t: ["train", *TINY, "transfer.mode=copy_all"],
        "transfer.mode must be one of 'scratch'",
    ),
    Case(
        "layer index out of range",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_teacher(t)}",
            "transfer.layers=5",
        ],
        "layer index 5 is out of range",
    ),
    Case(
        "head index out of range",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_teacher(t)}",
            "transfer.heads=[3]",
        ],
        "head index 3 is out of range",
    ),
    Case(
        "student with more heads than the teacher, paired by index",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_teacher(t)}",
            "student.model_args={num_heads: 4}",
        ],
        "student head 3 is selected but the teacher has only 2 heads",
    ),
    Case(
        "head map that does not fit the head counts",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=distill",
            f"teacher.source={_teacher(t)}",
            "student.model_args={embed_dim: 48, num_heads: 3}",
            "transfer.head_map=average",
        ],
        "head_map='average' needs one head count to divide the other",
    ),
    Case(
        "copy between different token grids",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=copy",
            f"teacher.source={_teacher(t)}",
            "student.model_args={patch_size: 8}",
        ],
        "mode 'copy' needs the same ones",
    ),
    Case(
        "option that has no effect in the mode",
        lambda t: ["train", *TINY, "transfer.mode=scratch", "transfer.layers=all"],
        "has no effect in mode 'scratch'",
    ),
    Case(
        "config file does not exist",
        lambda t: ["train", "-c", str(t / "missing.yaml")],
        "does not exist",
    ),
    Case(
        "config file is not valid YAML",
        lambda t: ["train", "-c", str(_text(t / "b.yaml", "optim: {epochs: 3\n"))],
        "is not valid YAML",
    ),
    Case(
        "unknown config key",
        lambda t: ["train", *TINY, "optim.epoch=3"],
        "unknown config key optim.epoch",
    ),
    Case(
        "unknown config section",
        lambda t: ["train", *TINY, "optimizer.lr=3"],
        "unknown config key optimizer",
    ),
    Case(
        "mistyped config value",
        lambda t: ["train", *TINY, "optim.epochs=ten"],
        "optim.epochs must be an integer",
    ),
    Case(
        "override without '='",
        lambda t: ["train", *TINY, "optim.epochs"],
        "is not of the form section.key=value",
    ),
    Case(
        "fp16 autocast on CPU",
        lambda t: ["train", *TINY, "run.amp=fp16", f"run.output={t / 'r'}"],
        "needs a GPU",
    ),
    Case(
        "unknown data pipeline",
        lambda t: ["train", *TINY, "data.pipeline=fast", f"run.output={t / 'r'}"],
        "data.pipeline must be one of 'auto', 'tensor', 'pil', got 'fast'",
    ),
    Case(
        "tensor pipeline asked for an augmentation it cannot do",
        lambda t: [
            "train",
            *TINY,
            "data.pipeline=tensor",
            "data.reprob=0.25",
            f"run.output={t / 'r'}",
        ],
        "data.pipeline=tensor cannot augment this recipe",
    ),
    Case(
        "tensor pipeline on images of different sizes",
        lambda t: [
            "train",
            *TINY,
            "data.name=imagefolder",
            f"data.root={_ragged(t / 'g')}",
            "data.pipeline=tensor",
            f"run.output={t / 'r'}",
        ],
        "needs images of one size",
    ),
    Case(
        "batch larger than the training set",
        lambda t: ["train", *TINY, "data.batch_size=5000", f"run.output={t / 'r'}"],
        "smaller than one update",
    ),
    Case(
        "new run in a non-empty run directory",
        lambda t: ["train", *TINY, f"run.output={_non_empty(t / 'r')}"],
        "is not empty",
    ),
    Case(
        "resume from a path that is not a checkpoint",
        lambda t: ["train", *TINY, "--resume", str(t)],
        "is neither a run directory nor a checkpoint",
    ),
    Case(
        "resume from a checkpoint of another architecture",
        lambda t: [
            "train",
            *TINY,
            "transfer.mode=scratch",
            f"run.output={t / 'r'}",
            "--resume",
            str(_other_arch_run(t)),
        ],
        "is of another architecture",
    ),
    Case("export of a copy-mode student", _copy_export, "cannot run without its teacher"),
    Case(
        "eval of a folder that is not a run",
        lambda t: ["eval", str(t)],
        "is neither a run directory nor a checkpoint",
    ),
    Case(
        "ensemble of one model",
        lambda t: ["eval", str(_other_arch_run(t)), "--ensemble"],
        "--ensemble needs at least two models",
    ),
    Case(
        "non-finite loss",
        lambda t: [
            "train",
            *TINY,
            "optim.lr=1e30",
            "optim.warmup_epochs=0",
            f"run.output={t / 'r'}",
        ],
        "non-finite loss at step",
    ),
    Case(
        "MAE pre-training of a non-ViT model",
        lambda t: ["pretrain", *TINY[:-1], "student.arch=resnet18", f"run.output={t / 'r'}"],
        "student.arch=resnet18 is a ResNet",
    ),
    Case(
        "MAE pre-training with mixup",
        lambda t: ["pretrain", *TINY[:-1], "data.mixup=0.8", f"run.output={t / 'r'}"],
        "uses no labels",
    ),
    Case(
        "unknown pre-training method",
        lambda t: ["pretrain", *TINY[:-1], "pretrain.method=simclr", f"run.output={t / 'r'}"],
        "pretrain.method must be one of 'mae', 'supervised', got 'simclr'",
    ),
    Case(
        "size or count out of range",
        lambda t: ["train", *TINY, "data.batch_size=0"],
        "data.batch_size must be at least 1, got 0",
    ),
    Case(
        "probability out of range",
        lambda t: ["train", *TINY, "data.reprob=1.5"],
        "data.reprob must be in [0, 1], got 1.5",
    ),
    Case(
        "learning rate not positive",
        lambda t: ["train", *TINY, "optim.lr=0"],
        "optim.lr must be greater than 0",
    ),
    Case(
        "non-finite number",
        lambda t: ["train", *TINY, "optim.blr=.nan"],
        "optim.blr must be a finite number",
    ),
    Case(
        "crop scale not an ascending pair",
        lambda t: ["train", *TINY, "data.scale=[0.9,0.1]"],
        "data.scale must be a list of 2 numbers, each in (0, 1], in ascending order",
    ),
    Case(
        "normalisation std of zero",
        lambda t: ["train", *TINY, "data.std=[0.2,0,0.2]"],
        "data.std must be a list of 3 numbers, each greater than 0",
    ),
    Case(
        "augmentation string timm cannot parse",
        lambda t: ["train", *TINY, "data.auto_augment=rand-zz"],
        "data.auto_augment must be a timm augmentation string",
    ),
    Case(
        "unknown optimiser",
        lambda t: ["train", *TINY, "optim.opt=adamz"],
        "optim.opt must be a timm optimiser name",
    ),
    Case(
        "unknown device",
        lambda t: ["train", *TINY, "run.device=tpu"],
        "run.device must be one of 'auto', 'cpu', 'cuda'",
    ),
    Case(
        "unknown pooling",
        lambda t: ["train", *TINY, "student.global_pool=mean"],
        "student.global_pool must be one of",
    ),
    Case(
        "warmup longer than the schedule",
        lambda t: ["train", *TINY, "optim.warmup_epochs=3"],
        "optim.warmup_epochs=3 is longer than optim.epochs=1",
    ),
    Case(
        "model image size differs from the data's",
        lambda t: ["train", *TINY, "data.img_size=32"],
        "student.model_args.img_size=16 differs from data.img_size=32",
    ),
    Case(
        "image size not a multiple of the patch size",
        lambda t: [
            "train",
            *TINY,
            "data.img_size=18",
            "student.model_args={img_size: 18}",
        ],
        "data.img_size=18 is not a multiple of the student's patch size 4",
    ),
    Case(
        "teacher architecture given without a teacher",
        lambda t: ["train", *TINY, "teacher.arch=vit_tiny_patch16_224"],
        "teacher.arch and teacher.model_args describe teacher.source",
    ),
    Case(
        "student that is not a ViT",
        lambda t: ["train", *TINY, "student.arch=resnet18", "student.model_args={}"],
        "student.arch=resnet18 is a ResNet",
    ),
    Case(
        "student arguments timm refuses",
        lambda t: [
            "train",
            *TINY,
            "student.model_args={img_size: 16, patch_size: 4, embed_dim: 30, num_heads: 4}",
        ],
        "cannot build vit_tiny_patch16_224",
    ),
    Case(
        "decoder width not divisible by its heads",
        lambda t: ["pretrain", *TINY[:-1], "pretrain.decoder_heads=3", f"run.output={t / 'r'}"],
        "pretrain.decoder_dim=128 is not divisible by pretrain.decoder_heads=3",
    ),
    Case(
        "model card of a folder that is neither a run nor a teacher",
        lambda t: ["pretrain", "--card", str(t / "none"), "--downstream", str(t)],
        "is neither a finished pre-training run (no teacher/) nor a teacher folder",
    ),
    Case(
        "sweep grid without values",
        lambda t: ["sweep", "--grid", "transfer.mode", "--out", str(t / "s"), *TINY],
        "is not KEY=V1,V2",
    ),
    Case(
        "sweep with a bad config key",
        lambda t: ["sweep", "--grid", "optim.nope=1,2", "--out", str(t / "s"), *TINY],
        "unknown config key optim.nope",
    ),
    Case(
        "sweep reusing runs from a missing folder",
        lambda t: [
            "sweep",
            "--grid",
            "transfer.mode=scratch",
            "--reuse",
            str(t / "nowhere"),
            "--out",
            str(t / "s"),
            *TINY,
        ],
        "no such folder",
    ),
    Case(
        "sweep training no runs at a time",
        lambda t: ["sweep", "--grid", "transfer.mode=scratch", "--jobs", "0", "--out", str(t)],
        "give how many runs to train at once",
    ),
    Case(
        "reproduce with a missing teacher",
        lambda t: ["reproduce", "--out", str(t / "r"), "--teacher", str(t / "none.pt")],
        "does not exist",
    ),
    Case(
        "schedule curve at a fractional number of epochs above one",
        lambda t: ["reproduce", "--curve", "0.4,2.5", "--out", str(t / "c")],
        "is not valid: use whole epochs",
    ),
    Case(
        "reproduce --reuse of a folder that does not exist",
        lambda t: ["reproduce", "--reuse", str(t / "kept"), "--out", str(t / "r")],
        "no such folder; give a folder of finished runs",
    ),
    Case(
        "reproduce --finished-only before any run has finished",
        lambda t: ["reproduce", "--finished-only", "--out", str(t / "r")],
        "no finished run of the table in <path>: train it without --finished-only",
    ),
    Case(
        "reproduce --finished-only with --shift",
        lambda t: ["reproduce", "--finished-only", "--shift", "--out", str(t / "r")],
        "--finished-only tabulates the in-distribution rows: drop --shift",
    ),
    Case(
        "sweep --finished-only before any cell has finished",
        lambda t: [
            "sweep",
            "--grid",
            "transfer.mode=scratch",
            "--out",
            str(t / "s"),
            "--finished-only",
            "student.arch=vit_tiny_patch16_224",
        ],
        "no finished cell of the sweep",
    ),
    Case(
        "sweep whose cell folder holds a run of another configuration",
        lambda t: [
            "sweep",
            "--grid",
            "transfer.mode=scratch",
            "--seeds",
            "0",
            "--out",
            str(_foreign_cell(t / "s")),
            *TINY[:-1],
        ],
        "holds a run of another configuration than cell mode=scratch/seed0",
    ),
    Case(
        "sweep --plan together with --finished-only",
        lambda t: [
            "sweep",
            "--grid",
            "transfer.mode=scratch",
            "--out",
            str(t / "s"),
            "--plan",
            "--finished-only",
        ],
        "--plan and --finished-only: give one of them",
    ),
    Case(
        "prepare of an unknown data set",
        lambda t: ["prepare", "imagenet-21k", "--cache", str(t / "c")],
        "unknown data set",
    ),
    Case(
        "similarity of models of different depths",
        lambda t: [
            "analyze",
            "similarity",
            str(_teacher(t)),
            "--reference",
            str(_teacher(t, depth=3)),
            "--data",
            "digits",
            "--img-size",
            "16",
            "--out",
            str(t / "a"),
        ],
        "differ in depth or tokens",
    ),
    Case(
        "eval reference set that is not a set",
        lambda t: ["eval", str(t), "--set", "a=digits", "--reference-set", "b"],
        "is not one of the --set labels",
    ),
]


def run_case(case: Case, tmp: Path) -> tuple[int, str, list[Path]]:
    """Run one case in ``tmp``: (exit status, the error line with paths neutralised, the files
    the command created)."""
    argv = case.argv(tmp)  # may set up files first
    before = set(tmp.rglob("*"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    created = sorted(set(tmp.rglob("*")) - before)
    lines = [x for x in err.getvalue().splitlines() if x.startswith("attnxfer: error:")]
    line = lines[-1] if lines else ""
    return code, re.sub(re.escape(str(tmp)) + r"[^\s,;:')\]]*", "<path>", line), created


def write_docs(path: Path) -> None:
    import tempfile

    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            code, line, _ = run_case(case, Path(tmp))
        message = line.removeprefix("attnxfer: error: ").replace("|", "\\|")
        rows.append(f"| {case.what} | {code} | {message} |")
    path.write_text(
        "# Bad input and what attnxfer says\n\n"
        "Each row is a test in `tests/test_bad_inputs.py`; the messages are what the CLI printed\n"
        "(regenerate with `python tests/bad_inputs.py`). Every one is a single line on stderr,\n"
        "exit status 2, and nothing is written or overwritten.\n\n"
        "| bad input | exit | message |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    write_docs(Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md")
