"""The ``attnxfer`` command line.

One pair of functions per command: ``add_<command>`` declares its arguments, ``run_<command>``
calls the library and prints; :data:`COMMANDS` lists them in ``--help`` order. Adding a command
means adding a pair here and its test. User errors print one line (``attnxfer: error: ...``)
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from .errors import AttnxferError, Stopped

Subparsers = argparse._SubParsersAction


def _train_epilog() -> str:
    """The config keys, read off the dataclasses so the help can never fall out of date."""
    from .config import Config
    from .transfer import MODES

    lines = [
        "configuration: YAML files (-c, later ones win) plus section.key=value overrides, e.g.",
        "  attnxfer train -c configs/small/digits_distill.yaml optim.epochs=5 "
        "transfer.layers=last:2",
        "sections and keys (type, default and accepted values of each: docs/config.md):",
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


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c YAML``, ``--resume`` and ``section.key=value`` overrides (train, pretrain)."""
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="config file; repeat to merge several (later wins)",
    )
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="'auto': continue from the newest good checkpoint in run.output (SIGTERM or "
        "Ctrl-C stops a run with a checkpoint of the step it reached; a second Ctrl-C stops "
        "at once); or a checkpoint directory",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="config overrides (values parsed as YAML)",
    )


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise AttnxferError(f"--jobs {text}: give how many runs to train at once, 1 or more")
    return int(text)


def _runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Sweep's and reproduce's: ``--reuse DIR`` (finished runs that identical cells take),
    ``--plan`` and ``--jobs N``."""
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of finished runs (another sweep, a reproduce table, kept records): a cell "
        "whose resolved config equals one of them takes its result instead of training; "
        "repeatable (reproduce trains a fine-tuned or distilled cell again when the run it would "
        "take holds no weights and neither its seed's ensemble nor, with --shift, its top-1 on the "
        "corrupted sets has a record)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="train and write nothing: list each run and what this command would do with it "
        "(finished, taken from --reuse, resumed, trained, with its command)",
    )
    parser.add_argument(
        "--jobs",
        default="1",
        metavar="N",
        help="train N runs at a time, each in its own process with 1/N of the CPU cores (or, "
        "with several GPUs, one GPU each); on a 2-core CPU, --jobs 2 trains small students "
        "faster than one at a time (benchmarks/parallel_runs.py). Default 1",
    )


def _print_plan(cells, args: argparse.Namespace, retrain=None) -> int:
    from .sweep import plan

    if args.finished_only:
        raise AttnxferError("--plan and --finished-only: give one of them")
    print(plan(cells, Path(args.out), [Path(d).expanduser() for d in args.reuse], retrain))
    return 0


def _config(args: argparse.Namespace):
    from .config import load_run_config

    return load_run_config(args.config, args.overrides, args.resume)


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AttnxferError(f"{what} {text!r} must be comma-separated integers") from None


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AttnxferError(f"{what} {text!r} must be comma-separated numbers") from None


# -- train ------------------------------------------------------------------------------------


def add_train(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "train",
        help="train a student (any mode)",
        epilog=_train_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arguments(parser)


def run_train(args: argparse.Namespace) -> int:
    from .engine import train

    summary = train(_config(args), resume=args.resume)
    if _main_process():
        print(json.dumps(summary))
    return 0


# -- pretrain ---------------------------------------------------------------------------------


def add_pretrain(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "pretrain",
        help="make a teacher: MAE or supervised pre-training of a timm ViT",
        epilog=_train_epilog().replace("attnxfer train", "attnxfer pretrain"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--method",
        choices=["mae", "supervised"],
        help="overrides pretrain.method (default mae); the encoder ends in RUN/teacher/",
    )
    parser.add_argument(
        "--card",
        metavar="RUN",
        help="instead of training: rewrite the model card (README.md, loss.png) of the finished "
        "pre-training RUN; given a teacher folder instead (model.safetensors and README.md, its "
        "run gone), rewrite only its table of --downstream students",
    )
    parser.add_argument(
        "--downstream",
        action="append",
        default=[],
        metavar="DIR",
        help="with --card: a finished training run that used the teacher (fine-tuning, scratch, "
        "transfer), listed with its top-1; repeatable",
    )
    parser.add_argument("--title", help="with --card: the card's name (default: the run's folder)")
    _config_arguments(parser)


def run_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain, set_downstream, write_card

    if args.card:
        if args.config or args.overrides or args.resume or args.method:
            raise AttnxferError(
                "--card reads a finished run: give no config, overrides or --resume"
            )
        card, downstream = Path(args.card), [Path(d) for d in args.downstream]
        if (card / "teacher" / "model.safetensors").is_file():
            print(write_card(card, args.title, downstream))
            return 0
        if not ((card / "model.safetensors").is_file() and (card / "README.md").is_file()):
            raise AttnxferError(
                f"{card} is neither a finished pre-training run (no teacher/) nor a teacher folder "
                "with its card (model.safetensors, README.md)"
            )
        if args.title or not downstream:
            raise AttnxferError(
                f"{card} is a teacher folder without its run: only its --downstream table can be "
                "rewritten; give one or more --downstream runs and no --title"
            )
        print(set_downstream(card / "README.md", downstream))
        return 0
    if args.downstream or args.title:
        raise AttnxferError("--downstream and --title go with --card RUN")
    cfg = _config(args)
    if args.method:
        cfg.pretrain.method = args.method
    summary = pretrain(cfg, resume=args.resume)
    if _main_process():
        print(json.dumps(summary))
    return 0


# -- eval -------------------------------------------------------------------------------------


def add_eval(sub: Subparsers) -> None:
    parser = sub.add_parser("eval", help="evaluate trained models and their ensemble")
    parser.add_argument(
        "models",
        nargs="+",
        metavar="RUN_OR_CHECKPOINT",
        help="run directories (newest good checkpoint) or checkpoint directories",
    )
    parser.add_argument(
        "--weights",
        choices=["raw", "ema", "both"],
        default="raw",
        help="which weights of each model to evaluate (default raw)",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also evaluate the average of the members' softmax outputs",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="LABEL=NAME[:ROOT]",
        help="an evaluation set: a dataset name (digits, imagefolder, cifar10, ...) "
        "and its root; repeatable. Default: the first model's own validation set",
    )
    parser.add_argument(
        "--split",
        help="split folder / split of each set (default: the first model's data.val_split)",
    )
    parser.add_argument(
        "--class-map",
        metavar="FILE",
        help="text file: line i is the model class index of evaluation label i "
        "(label spaces that are a subset of the model's, as ImageNet-A/-R)",
    )
    parser.add_argument(
        "--reference-set",
        metavar="LABEL",
        help="the in-distribution set: also report each set's top-1 drop from it",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_models, parse_set, read_class_map, results_text, with_drops
    from .runtime import setup_distributed

    if args.ensemble and len(args.models) * (2 if args.weights == "both" else 1) < 2:
        raise AttnxferError("--ensemble needs at least two models")
    sets = dict(parse_set(s) for s in args.sets)
    ref = args.reference_set
    if ref is not None and ref not in (sets or {"val": None}):
        raise AttnxferError(f"--reference-set {ref!r} is not one of the --set labels")
    d = setup_distributed(args.device)
    results = evaluate_models(
        args.models,
        sets=sets,
        split=args.split,
        weights=args.weights,
        ensemble=args.ensemble,
        class_subset=read_class_map(args.class_map) if args.class_map else None,
        batch_size=args.batch_size,
        d=d,
    )
    if ref is not None:
        with_drops(results, ref)
    if d.main:
        print(results_text(results, ref))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


# -- export -----------------------------------------------------------------------------------


def add_export(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "export",
        help="write a trained student as a plain timm checkpoint, or the encoder of an MAE "
        "pre-training checkpoint (any epoch) as a teacher",
    )
    parser.add_argument("model", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument(
        "out",
        metavar="OUT_DIR",
        help="new folder: model.safetensors, config.json, README.md (timm's hub layout)",
    )
    parser.add_argument("--weights", choices=["raw", "ema"], default="raw")


def run_export(args: argparse.Namespace) -> int:
    from .export import export_student

    path = export_student(args.model, args.out, args.weights)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


# -- prepare ----------------------------------------------------------------------------------


def add_prepare(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "prepare",
        help="unpack real data (../shared/data archives) into ImageFolder layouts in a cache",
    )
    parser.add_argument(
        "name", help="cifar10-jpeg, tiny-imagenet, cifar10-c, digits-shift or imagenet-sample"
    )
    parser.add_argument("--source", default="../shared/data", help="folder of the archives")
    parser.add_argument("--cache", default="~/.cache/attnxfer", help="where the layouts go")


def run_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    prepare(args.name, Path(args.source), Path(args.cache))
    return 0


# -- sweep ------------------------------------------------------------------------------------


def add_sweep(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "sweep",
        help="a grid of training runs from one config (finished cells skipped), one table",
    )
    parser.add_argument("-c", "--config", action="append", default=[], metavar="YAML")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a config key and its values (separate by | when values hold commas); repeat "
        "for a product grid",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--out", required=True, help="folder of the runs and results.{json,md,png}")
    parser.add_argument("--metric", default="val_top1", help="summary key to tabulate (val_top1)")
    parser.add_argument("--title")
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing; write the table of the cells finished so far",
    )
    _runner_arguments(parser)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")


def run_sweep(args: argparse.Namespace) -> int:
    from .sweep import grid_cells, parse_grid, sweep

    if args.plan:
        seeds = _ints(args.seeds, "--seeds")
        return _print_plan(
            grid_cells(args.config, parse_grid(args.grid), seeds, args.overrides), args
        )
    result = sweep(
        args.config,
        args.grid,
        _ints(args.seeds, "--seeds"),
        Path(args.out),
        fixed=args.overrides,
        metric=args.metric,
        title=args.title,
        command=args.command_line,
        reuse=[Path(d).expanduser() for d in args.reuse],
        finished_only=args.finished_only,
        jobs=_jobs(args.jobs),
    )
    print((Path(args.out) / "results.md").read_text())
    return 0 if result["rows"] else 1


# -- reproduce --------------------------------------------------------------------------------


def add_reproduce(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "reproduce",
        help="the paper's main table at small scale on CIFAR-10 (scratch, fine-tune, copy, "
        "distill, feature distillation, ensemble), several seeds",
    )
    parser.add_argument("--tier", choices=["cpu", "cpu-long", "gpu"], default="cpu")
    parser.add_argument("--out", required=True, help="folder of the runs and results.{json,md,png}")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the tier's)")
    parser.add_argument("--teacher", help="in-distribution teacher file (default: the tier's)")
    parser.add_argument(
        "--shift",
        action="store_true",
        help="also the Tiny-ImageNet teacher's rows and corrupted CIFAR-10 evaluation",
    )
    parser.add_argument("--shift-teacher", help="teacher pre-trained on other data")
    parser.add_argument("--cache", default="~/.cache/attnxfer", help="prepared data (cifar10-c)")
    parser.add_argument(
        "--curve",
        metavar="E1,E2,...",
        help="instead of the table: the schedule curve (scratch, fine-tune, copy, distill and the "
        "gap recovered) at these training lengths, in epochs of the full training set (a share "
        "below 1 is one pass over that share), into OUT/schedule_curve.{json,md,png}",
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing; tabulate the table (or draw the --curve) from the runs finished "
        "so far",
    )
    _runner_arguments(parser)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")


def run_reproduce(args: argparse.Namespace) -> int:
    from .curve import curve_cells, schedule_curve
    from .reproduce import planned_cells, reproduce, weightless_members

    if args.curve is not None and (args.shift or args.shift_teacher):
        raise AttnxferError("--curve draws the in-distribution curve only: drop --shift")
    if args.plan:
        seeds = _ints(args.seeds, "--seeds")
        if args.curve is None:
            cells = planned_cells(
                args.tier, seeds, args.shift, args.overrides, args.teacher, args.shift_teacher
            )
        else:
            lengths = _floats(args.curve, "--curve")
            cells = curve_cells(args.tier, lengths, seeds, args.overrides, args.teacher)
        return _print_plan(cells, args, weightless_members)
    if args.curve is not None:
        schedule_curve(
            args.tier,
            Path(args.out),
            lengths=_floats(args.curve, "--curve"),
            seeds=_ints(args.seeds, "--seeds"),
            overrides=args.overrides,
            teacher=args.teacher,
            reuse=[Path(r) for r in args.reuse],
            finished_only=args.finished_only,
            command=args.command_line,
            jobs=_jobs(args.jobs),
        )
        print((Path(args.out) / "schedule_curve.md").read_text())
        return 0
    reproduce(
        args.tier,
        Path(args.out),
        seeds=_ints(args.seeds, "--seeds"),
        shift=args.shift,
        overrides=args.overrides,
        teacher=args.teacher,
        shift_teacher=args.shift_teacher,
        cache=args.cache,
        reuse=[Path(r) for r in args.reuse],
        finished_only=args.finished_only,
        command=args.command_line,
        jobs=_jobs(args.jobs),
    )
    print((Path(args.out) / "results.md").read_text())
    return 0


# -- analyze ----------------------------------------------------------------------------------


def add_analyze(sub: Subparsers) -> None:
    parser = sub.add_parser("analyze", help="attention analyses: similarity, locality, maps, count")
    analyses = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    models_help = (
        "run/checkpoint directories, teacher sources (file, hf-hub: id, timm name) or "
        "random:SOURCE; LABEL=SOURCE names a column (a label holds no '=')"
    )
    similarity = analyses.add_parser(
        "similarity", help="JS divergence of models' attention maps to a reference, per layer"
    )
    similarity.add_argument("models", nargs="+", metavar="MODEL", help=models_help)
    similarity.add_argument("--reference", required=True, metavar="MODEL")
    similarity.add_argument(
        "--pairing",
        default="index,hungarian,best,averaged",
        help="head pairings, comma-separated (index, hungarian, best, averaged)",
    )
    locality = analyses.add_parser(
        "locality",
        help="how far and how widely each layer attends: distance, entropy, class-token share",
    )
    locality.add_argument("models", nargs="+", metavar="MODEL", help=models_help)
    locality.add_argument(
        "--update",
        action="store_true",
        help="keep the models of OUT/locality.json not named here (same --data, --split and "
        "--images); a named one is measured again",
    )
    maps = analyses.add_parser("maps", help="attention of query tokens over images, model by model")
    maps.add_argument("models", nargs="+", metavar="MODEL", help=models_help)
    maps.add_argument("--layers", help="comma-separated layer indices (default all)")
    maps.add_argument("--queries", help="comma-separated patch indices (default the centre patch)")
    for each in (similarity, locality, maps):
        each.add_argument(
            "--data",
            required=True,
            help="digits, NAME:ROOT (imagefolder:/path/to/folder holding SPLIT/<class>/)",
        )
        each.add_argument("--split", help="split / sub-folder (default val, or test)")
        each.add_argument("--images", type=int, default=None, help="how many images")
        each.add_argument("--img-size", type=int, help="input size (default the first model's)")
        each.add_argument("--out", required=True, help="output folder")
    count = analyses.add_parser(
        "count", help="numbers per image moved by each kind of transfer (Q, Q+K, maps)"
    )
    count.add_argument(
        "--models",
        default="vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224,"
        "vit_large_patch16_224,vit_huge_patch14_224",
    )
    count.add_argument("--sizes", default="224,384,512,1024")
    count.add_argument("--out", help="also write count.md and count.json here")


def run_analyze(args: argparse.Namespace) -> int:
    from . import analysis
    from . import analyze as AZ

    if args.analysis == "count":
        rows = analysis.count_table(args.models.split(","), _ints(args.sizes, "--sizes"))
        print(analysis.count_markdown(rows))
        if args.out:
            analysis.write_count(rows, Path(args.out))
        return 0
    if args.analysis == "similarity":
        AZ.similarity(
            args.models,
            args.reference,
            args.data,
            Path(args.out),
            split=args.split,
            count=args.images or 64,
            img_size=args.img_size,
            pairings=tuple(p.strip() for p in args.pairing.split(",")),
        )
        print((Path(args.out) / "similarity.md").read_text())
        return 0
    if args.analysis == "locality":
        AZ.locality(
            args.models,
            args.data,
            Path(args.out),
            split=args.split,
            count=args.images or 64,
            img_size=args.img_size,
            update=args.update,
        )
        print((Path(args.out) / "locality.md").read_text())
        return 0
    paths = AZ.maps_figure(
        args.models,
        args.data,
        Path(args.out),
        layers=_ints(args.layers, "--layers"),
        queries=_ints(args.queries, "--queries"),
        count=args.images or 3,
        split=args.split,
        img_size=args.img_size,
    )
    print("\n".join(str(p) for p in paths))
    return 0


# -- demo -------------------------------------------------------------------------------------


def add_demo(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "demo",
        help="teacher + scratch/copy/distill students on small data, "
        "a table and an attention figure (minutes on a CPU)",
    )
    parser.add_argument(
        "--data",
        default="digits",
        help="'digits' (offline, default), an ImageFolder folder (train/, val/), or "
        "NAME:ROOT of a torchvision set, e.g. cifar10:/data/cifar10",
    )
    parser.add_argument("--out", help="new folder for the runs (default runs/demo-N)")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo as demo

    demo(args.data, args.out, args.teacher_epochs, args.student_epochs, args.seed)
    return 0


# -- the command ------------------------------------------------------------------------------

#: ``name -> (add its arguments, run it)``, in the order of ``attnxfer --help``
COMMANDS: dict[str, tuple[Callable[[Subparsers], None], Callable[[argparse.Namespace], int]]] = {
    "train": (add_train, run_train),
    "pretrain": (add_pretrain, run_pretrain),
    "eval": (add_eval, run_eval),
    "prepare": (add_prepare, run_prepare),
    "sweep": (add_sweep, run_sweep),
    "reproduce": (add_reproduce, run_reproduce),
    "analyze": (add_analyze, run_analyze),
    "export": (add_export, run_export),
    "demo": (add_demo, run_demo),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="attnxfer",
        description="Attention transfer (copy / distillation) for Vision Transformers.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return top


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if text.startswith("Caught "):  # re-raised from a DataLoader worker: keep the original
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.command_line = shlex.join(["attnxfer", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(
        level=logging.INFO if _main_process() else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command][1](args)
    except AttnxferError as e:
        print(f"attnxfer: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Stopped as e:
        print(f"attnxfer: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("attnxfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
