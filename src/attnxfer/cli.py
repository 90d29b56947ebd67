"""The ``attnxfer`` command: ``train``, ``eval``, ``export``.

User errors print one line (``attnxfer: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

from .errors import AttnxferError


def _train_epilog() -> str:
    """The config keys, read off the dataclasses so the help can never fall out of date."""
    from .config import Config
    from .transfer import MODES

    lines = [
        "configuration: YAML files (-c, later ones win) plus section.key=value overrides, e.g.",
        "  attnxfer train -c configs/small/digits_distill.yaml optim.epochs=5 "
        "transfer.layers=last:2",
        "sections and keys (defaults and meaning: src/attnxfer/config.py):",
    ]
    for section, fields in Config().to_dict().items():
        lines.append(
            textwrap.fill(
                " ".join(fields),
                width=96,
                initial_indent=f"  {section + ':':10}",
                subsequent_indent=" " * 12,
            )
        )
    lines.append(
        textwrap.fill(
            " ".join(MODES), width=96, initial_indent="modes: ", subsequent_indent=" " * 7
        )
    )
    lines.append(
        "many processes: torchrun --nproc_per_node N -m attnxfer train ... (same arguments)"
    )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attnxfer",
        description="Attention transfer (copy / distillation) for Vision Transformers.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a student (any mode)",
        epilog=_train_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="config file; repeat to merge several (later wins)",
    )
    t.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="'auto': continue from the newest good checkpoint in run.output; or a "
        "checkpoint directory",
    )
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="config overrides (values parsed as YAML)",
    )

    e = sub.add_parser("eval", help="evaluate trained models and their ensemble")
    e.add_argument(
        "models",
        nargs="+",
        metavar="RUN_OR_CHECKPOINT",
        help="run directories (newest good checkpoint) or checkpoint directories",
    )
    e.add_argument(
        "--weights",
        choices=["raw", "ema", "both"],
        default="raw",
        help="which weights of each model to evaluate (default raw)",
    )
    e.add_argument(
        "--ensemble",
        action="store_true",
        help="also evaluate the average of the members' softmax outputs",
    )
    e.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="LABEL=NAME[:ROOT]",
        help="an evaluation set: a dataset name (digits, imagefolder, cifar10, ...) "
        "and its root; repeatable. Default: the first model's own validation set",
    )
    e.add_argument("--split", default="val", help="split folder / split of each set (val)")
    e.add_argument(
        "--class-map",
        metavar="FILE",
        help="text file: line i is the model class index of evaluation label i "
        "(label spaces that are a subset of the model's, as ImageNet-A/-R)",
    )
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    x = sub.add_parser("export", help="write a trained student as a plain timm checkpoint")
    x.add_argument("model", metavar="RUN_OR_CHECKPOINT")
    x.add_argument("out", metavar="OUT_DIR", help="new folder for model.safetensors + model.json")
    x.add_argument("--weights", choices=["raw", "ema"], default="raw")
    m = sub.add_parser(
        "demo",
        help="teacher + scratch/copy/distill students on small data, "
        "a table and an attention figure (minutes on a CPU)",
    )
    m.add_argument(
        "--data",
        default="digits",
        help="'digits' (offline, default), an ImageFolder folder (train/, val/), or "
        "NAME:ROOT of a torchvision set, e.g. cifar10:/data/cifar10",
    )
    m.add_argument("--out", help="new folder for the runs (default runs/demo-N)")
    m.add_argument("--teacher-epochs", type=int, default=20)
    m.add_argument("--student-epochs", type=int, default=8)
    m.add_argument("--seed", type=int, default=0)
    return p


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.data, args.out, args.teacher_epochs, args.student_epochs, args.seed)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine import train

    configs = list(args.config)
    if args.resume and not configs:
        # continue with the run's own resolved config, unless other files are given
        output = next(
            (o.split("=", 1)[1] for o in args.overrides if o.startswith("run.output=")), None
        )
        if output and (Path(output) / "config.yaml").is_file():
            configs = [str(Path(output) / "config.yaml")]
    cfg = load_config(configs, args.overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from .config import DataConfig
    from .data import ResumableSampler, SeededTransform, build_transform, collate, raw_dataset
    from .engine import evaluate, setup_distributed
    from .inference import Ensemble, load_trained

    d = setup_distributed(args.device)
    kinds = ["raw", "ema"] if args.weights == "both" else [args.weights]
    members = [load_trained(m, w) for m in args.models for w in kinds]
    first = members[0].meta
    for m in members:
        m.model.to(d.device)
        if m.meta["mean"] != first["mean"] or m.meta["std"] != first["std"]:
            raise AttnxferError("the models normalise inputs differently; evaluate them apart")
    base = DataConfig(**first["config"]["data"])
    sets = {"val": base} if not args.sets else {}
    for spec in args.sets:
        label, sep, rest = spec.partition("=")
        if not sep:
            raise AttnxferError(f"--set {spec!r} is not LABEL=NAME[:ROOT]")
        name, _, root = rest.partition(":")
        sets[label] = DataConfig(**{**vars(base), "name": name, "root": root or None})
    subset = None
    if args.class_map:
        try:
            subset = [int(line) for line in Path(args.class_map).read_text().split()]
        except (OSError, ValueError) as e:
            raise AttnxferError(f"--class-map {args.class_map}: {e}") from None
    models = [(m.name, m.model) for m in members]
    if args.ensemble:
        if len(members) < 2:
            raise AttnxferError("--ensemble needs at least two models")
        models.append(("ensemble", Ensemble([m.model for m in members])))
    results: dict[str, dict[str, dict]] = {}
    for label, data_cfg in sets.items():
        raw = raw_dataset(data_cfg, args.split)
        tf = build_transform(data_cfg, False, tuple(first["mean"]), tuple(first["std"]))
        sampler = ResumableSampler(len(raw), False, rank=d.rank, world=d.world, pad=False)
        loader = DataLoader(
            SeededTransform(raw, tf, 0),
            batch_size=args.batch_size,
            sampler=sampler,
            collate_fn=collate,
        )
        for name, model in models:
            with torch.no_grad():
                results.setdefault(name, {})[label] = evaluate(
                    model, loader, d, class_subset=subset
                )
    if d.main:
        print(f"{'model':40} {'set':14} {'top1':>7} {'top5':>7} {'loss':>8} {'images':>7}")
        for name, per_set in results.items():
            for label, r in per_set.items():
                print(
                    f"{name:40.40} {label:14.14} {r['top1']:7.2f} {r['top5']:7.2f} "
                    f"{r['loss']:8.4f} {r['count']:7d}"
                )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .inference import export_student

    path = export_student(args.model, args.out, args.weights)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if text.startswith("Caught "):  # re-raised from a DataLoader worker: keep the original
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    handlers = {"train": _train, "eval": _eval, "export": _export, "demo": _demo}
    try:
        return handlers[args.command](args)
    except AttnxferError as e:
        print(f"attnxfer: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnxfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
