"""``attnxfer analyze similarity | locality | maps | count``: attention analyses as commands.

Models are named by a run or checkpoint directory (a trained student, rebuilt with its teacher
for copy modes), a teacher source (a file, ``hf-hub:`` id or timm name), or ``random:SOURCE``
(the architecture of SOURCE with fresh weights: the "random init" reference).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import analysis as A
from . import vit
from .errors import AttnxferError
from .report import colour, figure, table, write_results

log = logging.getLogger(__name__)


@dataclass
class Named:
    name: str
    model: nn.Module
    mean: tuple
    std: tuple


def model_spec(spec: str) -> tuple[str, str]:
    """``"LABEL=SOURCE"`` or ``"SOURCE"`` -> ``(label, source)``. A path that exists is a source
    as written, even with ``=`` in it (a sweep's cell folders are named ``key=value``); a label
    holds no ``=``."""
    label, sep, rest = spec.partition("=")
    if not sep or Path(spec).exists():
        return Path(spec).name or spec, spec
    return label, rest


def load_model(source: str, img_size: int | None = None) -> Named:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from .inference import load_trained
    from .models import build_student, build_teacher

    name, source = model_spec(source)
    path = Path(source)
    if path.is_dir() and ((path / "meta.json").is_file() or (path / "checkpoints").is_dir()):
        loaded = load_trained(path)
        meta = loaded.meta
        return Named(name, loaded.model.eval(), tuple(meta["mean"]), tuple(meta["std"]))
    fresh = source.startswith("random:")
    teacher = build_teacher(source.removeprefix("random:"), img_size=img_size)
    cfg = getattr(teacher, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean") or IMAGENET_DEFAULT_MEAN)
    std = tuple(cfg.get("std") or IMAGENET_DEFAULT_STD)
    if fresh:
        torch.manual_seed(0)
        teacher = build_student(teacher, getattr(teacher, "num_classes", 0) or 0)
    return Named(name, teacher.eval(), mean, std)


def image_batches(
    data: str, split: str | None, count: int, img_size: int, mean, std, batch: int = 32
) -> list[torch.Tensor]:
    """``count`` evaluation-transformed images, evenly spread over the set (fixed picks)."""
    from .config import DataConfig
    from .data import build_transform, raw_dataset
    from .inference import parse_set

    _, (name, root) = parse_set(f"x={data}")
    cfg = DataConfig(name=name, root=root, img_size=img_size)
    raw = raw_dataset(cfg, split or ("val" if name in ("digits", "imagefolder") else "test"))
    tf = build_transform(cfg, False, tuple(mean), tuple(std))
    step = max(1, len(raw) // count)
    picks = list(range(0, len(raw), step))[:count]
    images = []
    for i in picks:
        sample = raw[i]
        if sample is not None:
            images.append(tf(sample[0]))
    if not images:
        raise AttnxferError(f"no readable images in {data}")
    stacked = torch.stack(images)
    return list(stacked.split(batch))


def similarity(
    models: list[str],
    reference: str,
    data: str,
    out: Path,
    split: str | None = None,
    count: int = 64,
    img_size: int | None = None,
    pairings: tuple[str, ...] = A.PAIRINGS,
) -> dict[str, Any]:
    """JS divergence of each model's maps to ``reference``'s, per layer and pairing."""
    ref = load_model(reference, img_size)
    size = img_size or vit.img_size(ref.model)
    batches = image_batches(data, split, count, size, ref.mean, ref.std)
    result: dict[str, Any] = {
        "reference": ref.name,
        "data": data,
        "images": sum(b.shape[0] for b in batches),
        "pairings": list(pairings),
        "models": {},
    }
    for source in models:
        other = load_model(source, size)
        log.info("similarity: %s vs %s", other.name, ref.name)
        result["models"][other.name] = A.layer_similarity(other.model, ref.model, batches, pairings)
    write_results(out, "similarity", result, similarity_markdown, plot_similarity)
    return result


def similarity_markdown(r: dict[str, Any]) -> str:
    depth = len(next(iter(next(iter(r["models"].values())).values())))
    head = ["model", "pairing", *(f"L{i}" for i in range(depth)), "mean"]
    rows = [
        [name, pairing, *(f"{v:.3f}" for v in values), f"{sum(values) / len(values):.3f}"]
        for name, per in r["models"].items()
        for pairing, values in per.items()
    ]
    lines = [
        f"# Attention-map JS divergence to {r['reference']} ({r['images']} images of "
        f"{r['data']}; natural log, 0 = identical, at most ln 2 = 0.693)",
        "",
        *table(head, rows),
    ]
    return "\n".join(lines) + "\n"


def plot_similarity(r: dict[str, Any], path: Path) -> None:
    pairings = r["pairings"]
    size = (3.4 * len(pairings), 3)
    with figure(path, 1, len(pairings), figsize=size, sharey=True, squeeze=False) as (_, axes):
        axes = list(axes[0])
        for ax, pairing in zip(axes, pairings, strict=True):
            for i, (name, per) in enumerate(r["models"].items()):
                c = colour(i, len(r["models"]))
                ax.plot(range(len(per[pairing])), per[pairing], marker="o", color=c, label=name)
            ax.set_title(f"heads: {pairing}", fontsize=9)
            ax.set_xlabel("layer")
            ax.set_xticks(range(len(next(iter(r["models"].values()))[pairing])))
        axes[0].set_ylabel(f"JS divergence to {r['reference']}")
        axes[-1].legend(fontsize=7)


def locality(
    models: list[str],
    data: str,
    out: Path,
    split: str | None = None,
    count: int = 64,
    img_size: int | None = None,
    update: bool = False,
) -> dict[str, Any]:
    """How far and how widely each model's layers attend (:func:`analysis.layer_locality`),
    each model on the same images at its own input size and normalisation.

    ``update``: keep the models of ``out/locality.json`` that are not named here (measured on
    the same images: refused otherwise), so that a report can gain models without the weights
    of those it already holds; a named model replaces its old row in place, a new one comes
    last."""
    result: dict[str, Any] = {"data": data, "split": split, "models": {}}
    if update:
        result |= _kept_locality(out / "locality.json", data, split)
    for source in models:
        model = load_model(source, img_size)
        size = img_size or vit.img_size(model.model)
        batches = image_batches(data, split, count, size, model.mean, model.std)
        log.info("locality: %s", model.name)
        images = sum(b.shape[0] for b in batches)
        if result.setdefault("images", images) != images:
            raise AttnxferError(
                f"--update: {out / 'locality.json'} measured {result['images']} images, "
                f"{model.name} {images}: pass --images {result['images']}, or another --out"
            )
        result["models"][model.name] = {
            "grid": list(vit.grid(model.model)),
            **A.layer_locality(model.model, batches),
        }
    write_results(out, "locality", result, locality_markdown, plot_locality)
    return result


def _kept_locality(path: Path, data: str, split: str | None) -> dict[str, Any]:
    """The models and image count of an earlier locality report at ``path`` (nothing where
    there is none), refused when it measured other data or another split (a report written
    before the split was recorded is taken at its word)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
        models, images, old_data = old["models"], old["images"], old["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        why = f"no key {e}" if isinstance(e, KeyError) else str(e)
        raise AttnxferError(
            f"--update: {path} is not a locality report ({why}): remove it, or pass another --out"
        ) from None
    old_split = old.get("split", split)
    if (old_data, old_split) != (data, split):
        raise AttnxferError(
            f"--update: {path} measured {old_data} (split {old_split or 'default'}), "
            f"not {data} (split {split or 'default'}): pass the same --data and --split, "
            "or another --out"
        )
    return {"models": models, "images": images}


LOCALITY = {
    "distance": "mean attention distance (patches)",
    "entropy": "entropy (nats)",
    "prefix": "share on class/register tokens",
}


def locality_markdown(r: dict[str, Any]) -> str:
    depth = max(len(m["distance"]) for m in r["models"].values())
    head = ["model", "measure", *(f"L{i}" for i in range(depth)), "uniform map"]
    rows = []
    for name, m in r["models"].items():
        for key in LOCALITY:
            values = [f"{v:.2f}" for v in m[key]] + [""] * (depth - len(m[key]))
            uniform = {"distance": m["uniform_distance"], "entropy": m["max_entropy"]}.get(key)
            rows.append([name, key, *values, "" if uniform is None else f"{uniform:.2f}"])
    per_head = [
        [name, *(" / ".join(f"{v:.2f}" for v in h) for h in m["heads"]["distance"])]
        + [""] * (depth - len(m["distance"]))
        for name, m in r["models"].items()
    ]
    lines = [
        f"# Where attention goes, per layer ({r['images']} images of {r['data']})",
        "",
        "Patch queries only, averaged over images, queries and heads. "
        + "; ".join(f"{k}: {v}" for k, v in LOCALITY.items())
        + ". The distance is measured over the patch keys (that part of each row renormalised); "
        "a map spread evenly over all tokens has the distance and entropy of the last column.",
        "",
        *table(head, rows),
        "",
        "## Distance per head",
        "",
        "The mean attention distance of each head (head 0 / head 1 / ...), per layer: a student "
        "whose transfer covers some heads only shows here which heads leave the teacher's maps.",
        "",
        *table(["model", *(f"L{i}" for i in range(depth))], per_head),
    ]
    return "\n".join(lines) + "\n"


def plot_locality(r: dict[str, Any], path: Path) -> None:
    n = len(r["models"])
    # tall enough for one legend line per model; past 20 models the colours come round again,
    # drawn dashed with square markers
    size = (3.4 * len(LOCALITY) + 2.6, max(3.1, 0.16 * n + 0.8))
    with figure(path, 1, len(LOCALITY), figsize=size) as (_, axes):
        for ax, (key, label) in zip(axes, LOCALITY.items(), strict=True):
            for i, (name, m) in enumerate(r["models"].items()):
                c = colour(i, n)
                layers = range(len(m[key]))
                again = i >= 20
                ax.plot(
                    layers,
                    m[key],
                    marker="s" if again else "o",
                    linestyle="--" if again else "-",
                    color=c,
                    label=name,
                )
                for layer, heads in zip(layers, m["heads"][key], strict=True):
                    ax.scatter([layer] * len(heads), heads, s=8, color=c, alpha=0.4)
                uniform = {"distance": m["uniform_distance"], "entropy": m["max_entropy"]}
                if key in uniform:
                    ax.axhline(uniform[key], color=c, linestyle=":", linewidth=0.8)
            ax.set_xlabel("layer")
            ax.set_ylabel(label, fontsize=8)
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        axes[0].set_title("dots: heads; dotted: a map spread evenly", fontsize=7)


def maps_figure(
    models: list[str],
    data: str,
    out: Path,
    layers: list[int] | None = None,
    queries: list[int] | None = None,
    count: int = 3,
    split: str | None = None,
    img_size: int | None = None,
) -> list[Path]:
    """One PNG per layer: rows are (image, query token), columns the models; each panel is the
    head-averaged attention of the query over the patches, drawn over the image."""
    loaded = [load_model(m, img_size) for m in models]
    first = loaded[0]
    size = img_size or vit.img_size(first.model)
    (images,) = image_batches(data, split, count, size, first.mean, first.std, batch=count)
    prefix = vit.prefix_tokens(first.model)
    grid = vit.grid(first.model)
    depth = len(vit.blocks(first.model))
    layers = list(range(depth)) if layers is None else layers
    for layer in layers:
        if not -depth <= layer < depth:
            raise AttnxferError(f"layer {layer} out of range: the models have {depth} layers")
    n_patches = grid[0] * grid[1]
    centre = (grid[0] // 2) * grid[1] + grid[1] // 2
    token_queries = queries if queries is not None else [centre]
    for q in token_queries:
        if not 0 <= q < n_patches:
            raise AttnxferError(f"query patch {q} out of range: 0..{n_patches - 1}")
    picks = ([("class", 0)] if prefix else []) + [(f"patch {q}", prefix + q) for q in token_queries]
    maps = {m.name: A.attention_maps(m.model, images) for m in loaded}
    mean = torch.tensor(first.mean).view(3, 1, 1)
    std = torch.tensor(first.std).view(3, 1, 1)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for layer in layers:
        rows = [(i, label, tok) for i in range(images.shape[0]) for label, tok in picks]
        path = out / f"maps_layer{layer % depth}.png"
        cols = len(loaded) + 1
        inches = (1.9 * cols, 1.9 * len(rows))
        with figure(path, len(rows), cols, figsize=inches, squeeze=False, dpi=110) as (fig, axes):
            for r, (i, label, tok) in enumerate(rows):
                picture = (images[i] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
                axes[r, 0].imshow(picture)
                axes[r, 0].set_ylabel(label, fontsize=7)
                if tok >= prefix:
                    q = tok - prefix
                    axes[r, 0].scatter(
                        [(q % grid[1] + 0.5) * size / grid[1]],
                        [(q // grid[1] + 0.5) * size / grid[0]],
                        marker="x",
                        color="red",
                        s=30,
                    )
                for c, m in enumerate(loaded, start=1):
                    attn = maps[m.name][layer][i].mean(0)[tok, prefix:].reshape(grid)
                    heat = torch.nn.functional.interpolate(
                        attn[None, None].float(), size=(size, size), mode="nearest"
                    )[0, 0]
                    axes[r, c].imshow(picture)
                    axes[r, c].imshow(heat.numpy(), cmap="inferno", alpha=0.6)
                    if r == 0:
                        axes[r, c].set_title(m.name, fontsize=8)
            for ax in axes.flat:
                ax.set_xticks([])
                ax.set_yticks([])
            fig.suptitle(
                f"layer {layer % depth}: attention of the query (mean over heads)", fontsize=9
            )
        paths.append(path)
    return paths
