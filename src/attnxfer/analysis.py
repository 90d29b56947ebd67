"""Looking at attention: per-layer maps, map similarity between models, transfer counts.

- :func:`attention_maps`: every block's ``[B, H, N, N]`` map of any timm ViT, or the map an
  ``AttentionTransfer`` model actually attends with (a copy student uses its teacher's Q and/or K).
- :func:`js_divergence`, :func:`head_costs`, :func:`layer_similarity`: Jensen-Shannon divergence
  between two models' maps, layer by layer, averaged over images and query tokens, with heads
  paired by index, by an optimal one-to-one assignment (Hungarian), by the best match per head,
  or after averaging over heads.
- :func:`map_locality`, :func:`layer_locality`: how far and how widely each layer attends:
  mean attention distance in patches, entropy, and the share that goes to class/register tokens.
- :func:`transfer_counts`: how many numbers per image each kind of transfer moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as AF
from . import routes as R
from . import vit
from .errors import AttnxferError
from .report import table, write_results

PAIRINGS = ("index", "hungarian", "best", "averaged")


@torch.no_grad()
def attention_maps(model: nn.Module, images: Tensor) -> list[Tensor]:
    """Every block's attention maps ``[B, H, N, N]`` for ``images``, first block first.

    Works on a plain timm ViT, a teacher with taps, or an ``AttentionTransfer`` model: each
    block's attention input is captured by a forward hook and its map recomputed from ``qkv``
    (and qk-norm). For a wrapper, the map is the one the student attends with: in copy layers
    the teacher's queries (copy, copy_q) and keys (copy, copy_k) replace the student's in the
    transferred heads; a student called alone gives its own Q/K map.
    """
    blocks = vit.blocks(model)
    seen: dict[int, tuple[Tensor, Any]] = {}

    def hook(module, args, output, i):
        link = getattr(module, "link", None)
        seen[i] = (args[0], None if link is None else link.teacher)

    hooks = [
        blk.attn.register_forward_hook(lambda m, a, o, i=i: hook(m, a, o, i))
        for i, blk in enumerate(blocks)
    ]
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    if len(seen) != len(blocks):  # a hook that never fired must not go unnoticed
        raise RuntimeError(f"captured {len(seen)} of {len(blocks)} attention inputs")
    maps = []
    for i, blk in enumerate(blocks):
        x, teacher = seen[i]
        attn = blk.attn
        q, k, _ = R._Route.project(attn, x)  # same submodule names as timm's
        if isinstance(attn, R._Route):  # a route says which maps it attends with
            maps.append(attn.attended_map(q, k, teacher))
        else:
            maps.append(AF.attention_map(q, k, attn.scale))
    return maps


def js_divergence(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """Jensen-Shannon divergence (natural log) between distributions along ``dim``:
    ``(KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``; ``0 log 0 = 0``. In [0, log 2]."""
    m = 0.5 * (p + q)
    kl_p = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim)
    kl_q = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim)
    return (0.5 * (kl_p + kl_q)).clamp_min(0.0)


def head_costs(a: Tensor, b: Tensor) -> Tensor:
    """``[Ha, Hb]``: JS divergence between head i of ``a`` and head j of ``b`` (maps
    ``[B, H, N, N]``), summed over images and averaged over query tokens."""
    out = torch.empty(a.shape[1], b.shape[1], dtype=torch.float64)
    for i in range(a.shape[1]):
        js = js_divergence(a[:, i : i + 1].double(), b.double())  # [B, Hb, N]
        out[i] = js.mean(dim=2).sum(dim=0)
    return out


def pair_heads(cost: Tensor, pairing: str) -> float:
    """Mean divergence over the heads of the first model under ``pairing`` (from the
    ``[Ha, Hb]`` cost of :func:`head_costs`, already averaged over images)."""
    if pairing == "index":
        if cost.shape[0] != cost.shape[1]:
            raise AttnxferError(
                f"pairing heads by index needs equal head counts ({cost.shape[0]} vs "
                f"{cost.shape[1]}); use hungarian, best or averaged"
            )
        return cost.diagonal().mean().item()
    if pairing == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost.numpy())
        return cost[rows, cols].mean().item()
    if pairing == "best":
        return cost.min(dim=1).values.mean().item()
    raise AttnxferError(f"unknown head pairing {pairing!r}: choose {', '.join(PAIRINGS)}")


@torch.no_grad()
def layer_similarity(
    model_a: nn.Module,
    model_b: nn.Module,
    batches: list[Tensor],
    pairings: tuple[str, ...] = PAIRINGS,
) -> dict[str, list[float]]:
    """Per-layer JS divergence between two models' maps (same depth and token count), averaged
    over all images and query tokens: ``{pairing: [layer 0, layer 1, ...]}``."""
    for p in pairings:
        if p not in PAIRINGS:
            raise AttnxferError(f"unknown head pairing {p!r}: choose {', '.join(PAIRINGS)}")
    costs: list[Tensor] | None = None
    averaged: list[float] | None = None
    count = 0
    for images in batches:
        maps_a, maps_b = attention_maps(model_a, images), attention_maps(model_b, images)
        if len(maps_a) != len(maps_b) or maps_a[0].shape[-1] != maps_b[0].shape[-1]:
            raise AttnxferError(
                f"the models differ in depth or tokens ({len(maps_a)} x {maps_a[0].shape[-1]} "
                f"vs {len(maps_b)} x {maps_b[0].shape[-1]}): compare models of one architecture"
            )
        batch_costs = [head_costs(a, b) for a, b in zip(maps_a, maps_b, strict=True)]
        batch_avg = [
            js_divergence(a.double().mean(1), b.double().mean(1)).mean(1).sum().item()
            for a, b in zip(maps_a, maps_b, strict=True)
        ]
        costs = (
            batch_costs
            if costs is None
            else [c + d for c, d in zip(costs, batch_costs, strict=True)]
        )
        averaged = (
            batch_avg
            if averaged is None
            else [x + y for x, y in zip(averaged, batch_avg, strict=True)]
        )
        count += images.shape[0]
    if costs is None or averaged is None:
        raise AttnxferError("no images to compare the models on")
    out = {}
    for p in pairings:
        if p == "averaged":
            out[p] = [x / count for x in averaged]
        else:
            out[p] = [pair_heads(c / count, p) for c in costs]
    return out


def patch_distances(grid: tuple[int, int]) -> Tensor:
    """``[P, P]`` Euclidean distances, in patches, between the centres of a grid's patches
    (row-major, as a ViT orders its tokens)."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=-1).double()
    return torch.cdist(centres, centres)


def map_locality(maps: Tensor, grid: tuple[int, int], prefix: int) -> dict[str, Tensor]:
    """Per head, summed over images and the patch queries of ``maps`` ``[B, H, N, N]``
    (``prefix`` class/register tokens, then the patches of ``grid``):

    - ``distance``: mean attention distance in patches, ``sum_k p(k | q) |pos_q - pos_k|``
      over patch keys, with the patch part of each row renormalised to sum to one (so a
      query that attends mostly to the class token is measured by where its remainder goes);
    - ``entropy``: the entropy of the whole row in nats (0: one token; ``log N``: uniform);
    - ``prefix``: the share of the row on the prefix tokens.

    Each is a ``[H]`` tensor of sums; divide by ``B x P`` (``queries``, also returned)."""
    patches = grid[0] * grid[1]
    if maps.shape[-1] != prefix + patches:
        raise AttnxferError(
            f"maps over {maps.shape[-1]} tokens do not match {prefix} prefix tokens and a "
            f"{grid[0]}x{grid[1]} grid"
        )
    rows = maps[:, :, prefix:].double()  # patch queries only
    on_patches = rows[..., prefix:]
    mass = on_patches.sum(-1, keepdim=True).clamp_min(1e-12)
    distance = (on_patches / mass * patch_distances(grid)).sum(-1)
    entropy = -torch.xlogy(rows, rows).sum(-1)
    return {
        "distance": distance.sum((0, 2)),
        "entropy": entropy.sum((0, 2)),
        "prefix": (1 - on_patches.sum(-1)).sum((0, 2)),
        "queries": torch.tensor(rows.shape[0] * patches, dtype=torch.float64),
    }


@torch.no_grad()
def layer_locality(model: nn.Module, batches: list[Tensor]) -> dict[str, Any]:
    """:func:`map_locality` of every layer, averaged over all images and patch queries:
    ``{"distance" | "entropy" | "prefix": [per layer, mean over heads], "heads": {the same
    three: [per layer: [per head]]}}``, plus ``uniform_distance`` and ``max_entropy``, the
    values of a map that spreads evenly over all tokens (the reference line of the figure)."""
    grid, prefix = vit.grid(model), vit.prefix_tokens(model)
    sums: list[dict[str, Tensor]] | None = None
    for images in batches:
        found = [map_locality(m, grid, prefix) for m in attention_maps(model, images)]
        sums = (
            found
            if sums is None
            else [{k: s[k] + f[k] for k in s} for s, f in zip(sums, found, strict=True)]
        )
    if sums is None:
        raise AttnxferError("no images to measure the attention of")
    keys = ("distance", "entropy", "prefix")
    heads = {k: [(s[k] / s["queries"]).tolist() for s in sums] for k in keys}
    distances = patch_distances(grid)
    return {
        **{k: [sum(h) / len(h) for h in heads[k]] for k in keys},
        "heads": heads,
        "uniform_distance": distances.mean().item(),
        "max_entropy": float(torch.log(torch.tensor(prefix + distances.shape[0]))),
    }


def transfer_counts(model: nn.Module) -> dict[str, Any]:
    """Numbers per image moved from teacher to student, per layer and in total, for each kind
    of transfer: Q (or K, or V): ``N x D``; Q and K: ``2 N D``; full maps: ``H N^2``."""
    n = vit.num_tokens(model)
    depth = len(vit.blocks(model))
    attn = vit.blocks(model)[0].attn
    heads, dim = attn.num_heads, model.embed_dim
    per_layer = {"q_or_k": n * dim, "q_and_k": 2 * n * dim, "maps": heads * n * n}
    return {
        "tokens": n,
        "heads": heads,
        "dim": dim,
        "depth": depth,
        "per_layer": per_layer,
        "total": {k: v * depth for k, v in per_layer.items()},
        "maps_over_q_and_k": per_layer["maps"] / per_layer["q_and_k"],
    }


def count_table(archs: list[str], sizes: list[int]) -> list[dict[str, Any]]:
    """:func:`transfer_counts` for timm architectures at several resolutions (built on the
    meta device: no weights, no memory)."""
    import timm

    rows = []
    for arch in archs:
        for size in sizes:
            try:
                with torch.device("meta"):
                    model = timm.create_model(arch, img_size=size, num_classes=0)
            except (RuntimeError, TypeError, ValueError) as e:
                raise AttnxferError(f"cannot build {arch} at {size} px: {e}") from None
            rows.append({"arch": arch, "img_size": size, **transfer_counts(model)})
    return rows


def count_markdown(rows: list[dict[str, Any]]) -> str:
    def m(x: int) -> str:
        return f"{x / 1e6:.2f} M" if x >= 1e5 else f"{x / 1e3:.1f} k"

    head = ["model", "px", "tokens", "heads x depth", "Q per layer", "Q+K per layer"]
    head += ["maps per layer", "Q total", "Q+K total", "maps total", "maps / (Q+K)"]
    cells = []
    for r in rows:
        p, t = r["per_layer"], r["total"]
        sizes = [m(d[k]) for d in (p, t) for k in ("q_or_k", "q_and_k", "maps")]
        shape = f"{r['heads']} x {r['depth']}"
        ratio = f"{r['maps_over_q_and_k']:.1f}"
        cells.append([r["arch"], r["img_size"], r["tokens"], shape, *sizes, ratio])
    return "\n".join(table(head, cells))


def write_count(rows: list[dict[str, Any]], out: Path) -> None:
    """``out/count.json`` and ``out/count.md`` of :func:`count_table`'s rows."""
    write_results(out, "count", rows, lambda r: count_markdown(r) + "\n")
