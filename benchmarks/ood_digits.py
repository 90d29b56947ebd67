"""Out-of-distribution evaluation at small scale: fine-tuned against distilled students on
shifted digit sets (the paper: attention transfer loses more under shift than fine-tuning).

1. a supervised digits teacher (``attnxfer pretrain --method supervised``, scikit-learn digits);
2. fine-tuned and distilled students from it, 3 seeds each (``attnxfer sweep``);
3. every student evaluated on the digits validation set (in-distribution) and on MNIST, USPS and
   MNIST-M test sets (``attnxfer prepare digits-shift``), with the drop from in-distribution;
4. ``results.json`` and ``results.md`` (mean and std over seeds) in ``--out``.

    python benchmarks/ood_digits.py --out runs/ood-digits
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from attnxfer.config import load_config
from attnxfer.inference import evaluate_models
from attnxfer.prepare import digits_shift
from attnxfer.pretrain import pretrain
from attnxfer.report import hardware
from attnxfer.sweep import sweep

SETS = ("mnist", "usps", "mnist-m")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--source", default="../shared/data")
    p.add_argument("--cache", default="~/.cache/attnxfer")
    p.add_argument("--student-epochs", type=int, default=10)
    args = p.parse_args(argv)
    out = Path(args.out)
    start = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    teacher_run = out / "teacher"
    teacher = teacher_run / "teacher" / "model.safetensors"
    if not teacher.is_file():
        cfg = load_config(["configs/small/digits_teacher.yaml"], [f"run.output={teacher_run}"])
        cfg.pretrain.method = "supervised"
        pretrain(cfg, resume="auto" if teacher_run.exists() else None)
    sweep(
        ["configs/small/digits_distill.yaml"],
        ["transfer.mode=finetune,distill"],
        seeds,
        out / "students",
        fixed=[f"teacher.source={teacher}", f"optim.epochs={args.student_epochs}"],
        title="digits students for the shift evaluation",
    )
    roots = digits_shift(Path(args.source), Path(args.cache).expanduser())
    shifted = {name: ("imagefolder", str(root)) for name, root in zip(SETS, roots, strict=True)}
    per_mode: dict[str, dict[str, list[float]]] = {}
    for mode in ("finetune", "distill"):
        acc = per_mode.setdefault(mode, {})
        for seed in seeds:
            run = out / "students" / f"mode={mode}" / f"seed{seed}"
            # in-distribution: the run's own validation split (digits has no "test" split)
            (own,) = evaluate_models([run]).values()
            acc.setdefault("digits", []).append(own["val"]["top1"])
            (moved,) = evaluate_models([run], sets=shifted, split="test").values()
            for label, metrics in moved.items():
                acc.setdefault(label, []).append(metrics["top1"])

    def ms(v: list[float]) -> dict:
        return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}

    table = {
        mode: {
            label: {
                **ms(v),
                "drop": ms([a - b for a, b in zip(per_mode[mode]["digits"], v, strict=True)]),
                "runs": v,
            }
            for label, v in sets_.items()
        }
        for mode, sets_ in per_mode.items()
    }
    report = {
        "table": table,
        "seeds": seeds,
        "teacher": str(teacher),
        "command": shlex.join(["python", "benchmarks/ood_digits.py", *sys.argv[1:]]),
        "hardware": hardware(),
        "wall_seconds": time.time() - start,
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Out-of-distribution digits: fine-tuned vs distilled students",
        "",
        "Teacher: a supervised ViT on scikit-learn's 8x8 digits (upsampled to 32 px); students "
        f"fine-tuned from it or trained from scratch by attention distillation; {len(seeds)} "
        "seeds. Top-1 (%), mean ± std; drop = in-distribution top-1 minus shifted top-1.",
        "",
        "| model | digits (in-dist.) | " + " | ".join(SETS) + " | mean drop |",
        "|---|---|" + "---|" * len(SETS) + "---|",
    ]
    for mode, t in table.items():
        cells = [
            f"{t[s]['mean']:.2f} ± {t[s]['std']:.2f} (-{t[s]['drop']['mean']:.1f})" for s in SETS
        ]
        mean_drop = statistics.fmean(t[s]["drop"]["mean"] for s in SETS)
        lines.append(
            f"| {mode} | {t['digits']['mean']:.2f} ± {t['digits']['std']:.2f} | "
            + " | ".join(cells)
            + f" | {mean_drop:.2f} |"
        )
    lines += [
        "",
        f"Command: `{report['command']}`  ",
        f"Hardware: {report['hardware']}; wall time of this invocation "
        f"{report['wall_seconds'] / 60:.1f} min.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
