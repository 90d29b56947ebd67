"""Make teachers: masked-autoencoder (MAE) or supervised pre-training of a timm ViT.

``attnxfer pretrain --method mae|supervised`` runs on the same engine as ``train`` (data,
optimiser, schedule, EMA, AMP, DDP, atomic checkpoints, ``--resume auto``, metrics) and ends by
writing ``RUN/teacher``: the encoder as a plain timm model in timm's hub layout (see
:mod:`attnxfer.export`), which ``build_teacher`` (``teacher.source=RUN/teacher``) loads directly.

MAE (He et al., 2022) as in its reference: the encoder is an unmodified timm
``VisionTransformer`` that sees only the visible 25% of the patches (plus its class token);
fixed 2-D sin-cos position embeddings in encoder and decoder; a light decoder of timm ``Block``s
over all patches (mask tokens at the masked places); the loss is the mean squared error of the
per-patch normalised pixels, over the masked patches only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from . import routes as R
from .build import build_encoder
from .config import Config
from .engine import Task, Trainer
from .errors import AttnxferError
from .export import read_card, write_model
from .models import spec_of
from .report import figure, hardware, table
from .runtime import all_reduce, autocast
from .vit import num_tokens

log = logging.getLogger(__name__)

METHODS = ("mae", "supervised")


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C], patches in the order of timm's ``PatchEmbed``."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def _sincos(grid: tuple[int, int], dim: int, prefix: int) -> torch.Tensor:
    """MAE's fixed position embedding: 2-D sin-cos for patches, zeros for prefix tokens."""
    table = build_sincos2d_pos_embed(list(grid), dim=dim)
    return torch.cat([torch.zeros(prefix, dim), table]).unsqueeze(0)


class MaskedAutoencoder(nn.Module):
    """An unmodified timm ViT encoder (``self.encoder``) plus MAE's light decoder.

    ``forward(images)`` returns ``(loss, prediction, mask)``: prediction ``[B, N, p*p*3]``,
    mask ``[B, N]`` with 1 at the masked patches. ``impl`` chooses the attention kernels as
    ``AttentionTransfer``'s does: ``"auto"`` materialises the maps on a CPU at short sequences
    (PyTorch's math backend), ``"fused"`` leaves the choice to PyTorch, ``"eager"`` always
    materialises.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(encoder, VisionTransformer) or encoder.dynamic_img_size:
            raise AttnxferError(
                f"MAE pre-training needs a timm VisionTransformer with a fixed image size, not "
                f"{type(encoder).__name__}; choose a vit_* student.arch"
            )
        if not 0.0 < mask_ratio < 1.0:
            raise AttnxferError(f"pretrain.mask_ratio must be in (0, 1), got {mask_ratio}")
        if decoder_dim % decoder_heads:
            raise AttnxferError(
                f"pretrain.decoder_dim ({decoder_dim}) must be a multiple of "
                f"pretrain.decoder_heads ({decoder_heads})"
            )
        if impl not in R.MIXES:
            raise AttnxferError(
                f"transfer.impl={impl!r} is unknown: use 'auto', 'fused' or 'eager'"
            )
        self.encoder = encoder
        self.impl = impl
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        pe = encoder.patch_embed
        self.patch = pe.patch_size[0]
        self.prefix = encoder.num_prefix_tokens
        dim = encoder.embed_dim
        if encoder.pos_embed is not None:  # fixed sin-cos, as MAE (a frozen parameter)
            table = _sincos(pe.grid_size, dim, 0 if encoder.no_embed_class else self.prefix)
            encoder.pos_embed.data.copy_(table)
            encoder.pos_embed.requires_grad_(False)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", _sincos(pe.grid_size, decoder_dim, self.prefix), persistent=False
        )
        self.decoder_blocks = nn.Sequential(
            *(Block(decoder_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth))
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * pe.proj.in_channels)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encoder over the visible patches. ``noise`` [B, N] orders patches per image (the
        lowest ``(1 - mask_ratio) N`` are kept). Returns (latent, mask, restore index)."""
        e = self.encoder
        x = e._pos_embed(e.patch_embed(images))  # prefix tokens + patches, position added
        b, n = noise.shape
        keep = max(1, int(n * (1 - self.mask_ratio)))
        shuffle = noise.argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        kept = shuffle[:, :keep, None].expand(-1, -1, x.shape[-1])
        x = torch.cat([x[:, : self.prefix], x[:, self.prefix :].gather(1, kept)], dim=1)
        x = e.norm(e.blocks(e.norm_pre(e.patch_drop(x))))
        mask = torch.ones(b, n, device=images.device)
        mask[:, :keep] = 0
        return x, mask.gather(1, restore), restore

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        y = self.decoder_embed(latent)
        b, n = restore.shape
        patches = y[:, self.prefix :]
        fill = self.mask_token.to(y.dtype).expand(b, n - patches.shape[1], -1)
        patches = torch.cat([patches, fill], dim=1)
        patches = patches.gather(1, restore[..., None].expand(-1, -1, y.shape[-1]))
        y = torch.cat([y[:, : self.prefix], patches], dim=1) + self.decoder_pos_embed
        y = self.decoder_norm(self.decoder_blocks(y))
        return self.decoder_pred(y[:, self.prefix :])

    def loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = patchify(images, self.patch).float()
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, images: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.encoder.patch_embed.num_patches
        if noise is None:
            noise = torch.rand(images.shape[0], n, device=images.device)
        # the decoder sees every token: it sets the kernel choice (as ``AttentionTransfer``)
        with R.plain_attention_kernels(self.impl, images.device, num_tokens(self.encoder)):
            latent, mask, restore = self.encode(images, noise)
            pred = self.decode(latent, restore)
        return self.loss(images, pred, mask), pred, mask


class MaeTask(Task):
    """MAE pre-training as a :class:`~attnxfer.engine.Task`: the masked autoencoder, its
    reconstruction loss, its validation loss under fixed masks, and the encoder's spec in the
    checkpoint."""

    def build(self, cfg: Config, num_classes: int) -> tuple[nn.Module, nn.Module, dict | None]:
        p = cfg.pretrain
        if cfg.data.mixup or cfg.data.cutmix:
            raise AttnxferError("MAE pre-training uses no labels: set data.mixup=0 data.cutmix=0")
        mae = MaskedAutoencoder(
            build_encoder(cfg),
            mask_ratio=p.mask_ratio,
            norm_pix_loss=p.norm_pix_loss,
            decoder_dim=p.decoder_dim,
            decoder_depth=p.decoder_depth,
            decoder_heads=p.decoder_heads,
            impl=cfg.transfer.impl or "auto",
        )
        return mae, mae, None

    def losses(self, model, images, targets, criterion):
        loss, _, _ = model(images)
        return {"recon": loss.float()}, None

    @torch.no_grad()
    def validate(self, trainer: Trainer) -> dict[str, float]:
        """Reconstruction loss on the validation images under fixed masks (seed 0)."""
        model, d = trainer.model, trainer.d
        model.eval()
        gen = torch.Generator(device=d.device).manual_seed(0)
        n = model.encoder.patch_embed.num_patches
        total, count = 0.0, 0
        for batch in trainer.val_loader:
            images = batch.images.to(d.device)
            noise = torch.rand(images.shape[0], n, device=d.device, generator=gen)
            with autocast(d.device, trainer.amp):
                loss, _, _ = model(images, noise)
            total += loss.item() * images.shape[0]
            count += images.shape[0]
        total, count = all_reduce([total, count], d)
        return {"recon_loss": total / max(count, 1)}

    def meta(self, trainer: Trainer) -> dict[str, Any]:
        return {
            "config": trainer.cfg.to_dict(),
            "task": "mae",
            "encoder_spec": spec_of(trainer.model.encoder).to_json(),
            "classes": trainer.classes,
            "mean": list(trainer.mean),
            "std": list(trainer.std),
            "needs_teacher": None,
        }


def encoder_state(trainer: Trainer, weights: str = "raw") -> dict[str, torch.Tensor]:
    """The encoder's weights (raw or EMA) of an MAE run, under timm's own keys."""
    source = trainer.trained if weights == "raw" else trainer.ema.module
    return {
        k[len("encoder.") :]: v for k, v in source.state_dict().items() if k.startswith("encoder.")
    }


def plot_losses(run_dir: Path, path: Path) -> None:
    """The pre-training loss per logged step and the validation loss per evaluation (a resumed
    run's re-logged steps counted once)."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r["loss"] for r in records if "loss" in r}
    val = {r["step"]: r for r in records if any(k.startswith(("val_", "ema_")) for k in r)}
    with figure(path, figsize=(6, 3.6)) as (_, ax):
        ax.plot(list(train), list(train.values()), lw=0.8, label="training loss (per logged step)")
        for key in sorted({k for r in val.values() for k in r if k.startswith(("val_", "ema_"))}):
            steps = [s for s, r in val.items() if key in r]
            ax.plot(steps, [val[s][key] for s in steps], marker="o", ms=3, label=key)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.legend(fontsize=8)


def _downstream_rows(runs: list[Path]) -> list[list[Any]]:
    """One table row per finished training run that used the teacher: mode, length, top-1."""
    import yaml

    rows = []
    for run in runs:
        summary, config = run / "summary.json", run / "config.yaml"
        if not summary.is_file() or not config.is_file():
            raise AttnxferError(f"{run} is not a finished training run (summary.json, config.yaml)")
        s, cfg = json.loads(summary.read_text()), yaml.safe_load(config.read_text())
        d = cfg["data"]
        images = f"{d['train_subset']:,}" if d.get("train_subset") else "all"
        mode = cfg["transfer"]["mode"]
        rows.append([mode, images, s["epochs"], s["steps"], f"{s['val_top1']:.2f}", f"`{run}`"])
    return rows


#: the line above a card's table of students trained with the teacher
DOWNSTREAM = "Accuracy of students trained with it (top-1 on the validation split):"


def _downstream_block(runs: list[Path]) -> list[str]:
    return [
        DOWNSTREAM,
        "",
        *table(
            ["mode", "training images", "epochs", "steps", "top-1", "run"], _downstream_rows(runs)
        ),
    ]


def set_downstream(card: Path, downstream: list[Path]) -> Path:
    """Rewrite only the table of students trained with the teacher in an existing model card
    (``README.md`` of a teacher folder), adding it before the resolved configuration if the card
    has none: for a teacher whose pre-training run is no longer there to rewrite the whole card."""
    lines = card.read_text().split("\n")
    block = _downstream_block(list(downstream))  # every run checked before the card is touched
    if DOWNSTREAM in lines:
        start = end = lines.index(DOWNSTREAM)
        end += 2  # the heading, a blank line, then the table's rows
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = block
    else:
        at = next((i for i, x in enumerate(lines) if x.startswith("Resolved configuration")), None)
        if at is None:
            lines += ["", *block, ""]
        else:
            lines[at:at] = [*block, ""]
    card.write_text("\n".join(lines))
    return card


def write_card(run_dir: Path, title: str | None = None, downstream: list[Path] = ()) -> Path:
    """``RUN/teacher/README.md`` and ``loss.png``: how the teacher was made and how good it is,
    read off the run's own files (resolved config, summary, per-epoch metrics), and, given
    ``downstream`` training runs that used it (fine-tuning, a scratch baseline, transfer), their
    accuracy."""
    import hashlib

    import yaml

    teacher = run_dir / "teacher"
    card = read_card(teacher)
    summary = card["pretrain"]
    config = (run_dir / "config.yaml").read_text()
    cfg = yaml.safe_load(config)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if any(k.startswith(("val_", "ema_")) for k in r)]
    digest = hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()
    method = summary["method"]
    d = cfg["data"]
    n_params = sum(v.numel() for v in load_file(teacher / "model.safetensors").values())
    text = [
        f"# {title or run_dir.name}: a {method.upper() if method == 'mae' else method} teacher",
        "",
        "Made by attnxfer itself (`attnxfer pretrain`); weights in `model.safetensors`, "
        "architecture and input normalisation in `config.json` (timm's hub layout). Load it "
        "with `teacher.source=<this folder>`, or in timm with "
        '`timm.create_model("local-dir:<this folder>", pretrained=True)`.',
        "",
        f"- Architecture: timm `{card['architecture']}` with `{json.dumps(card['args'])}` "
        f"({n_params / 1e6:.2f} M parameters).",
        f"- Method: {method}"
        + (
            f", mask ratio {cfg['pretrain']['mask_ratio']}, decoder "
            f"{cfg['pretrain']['decoder_depth']} x {cfg['pretrain']['decoder_dim']} wide, "
            f"normalised-pixel loss {cfg['pretrain']['norm_pix_loss']}."
            if method == "mae"
            else "."
        ),
        f"- Data: `{d['name']}` at `{d['root']}` (split `{d['train_split']}`"
        + (f", subset of {d['train_subset']}" if d.get("train_subset") else "")
        + f"), read at {d['img_size']} px; validation split `{d['val_split']}`.",
        f"- Schedule: {summary['epochs']} epochs, {summary['steps']} steps of batch "
        f"{d['batch_size']}; "
        + (
            f"lr {cfg['optim']['lr']}"
            if cfg["optim"]["lr"] is not None
            else f"blr {cfg['optim']['blr']} (per 256 images)"
        )
        + ", warmup "
        f"{cfg['optim']['warmup_epochs']} epochs, weight decay {cfg['optim']['weight_decay']}, "
        f"betas {cfg['optim']['betas']}; augmentation: random resized crop "
        f"{d['scale']}, flip {d['hflip']}.",
        f"- Hardware: {hardware()}; training time {summary['seconds'] / 60:.1f} min.",
        f"- Weights: the {summary['weights']} weights; sha256 `{digest}`.",
        "",
        "Quality on the validation split, per evaluation:",
        "",
        *table(
            ["epoch", *(k for k in evals[-1] if k not in ("epoch", "step"))],
            [
                [r["epoch"], *(f"{v:.4f}" for k, v in r.items() if k not in ("epoch", "step"))]
                for r in evals
            ],
        ),
    ]
    if method == "mae":
        text += [
            "",
            "`val_recon_loss`: mean squared error of the per-patch normalised pixels of the masked "
            "patches under fixed masks (seed 0); predicting each patch's mean scores about 1.0.",
        ]
    plot_losses(run_dir, teacher / "loss.png")
    text += ["", "![pre-training and validation loss](loss.png)"]
    if downstream:
        text += ["", *_downstream_block(list(downstream))]
    text += ["", "Resolved configuration (`config.yaml` of the run):", "", "```yaml", config, "```"]
    path = teacher / "README.md"
    path.write_text("\n".join(text) + "\n")
    return path


def pretrain(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Pre-train a teacher by ``cfg.pretrain.method``; returns the training summary, with
    ``teacher`` (the path of the exported encoder)."""
    import torch.distributed as dist

    method = cfg.pretrain.method
    if method == "supervised":
        cfg.transfer.mode = "scratch"
        trainer: Trainer = Trainer(cfg, resume)
    else:
        trainer = Trainer(cfg, resume, task=MaeTask())
    try:
        summary = trainer.fit()
        if trainer.d.main:
            weights = "ema" if trainer.ema is not None else "raw"
            if method == "mae":
                model = trainer.model.encoder
                state = encoder_state(trainer, weights)
            else:
                model = trainer.trained
                source = trainer.trained if weights == "raw" else trainer.ema.module
                state = source.state_dict()
            card = {
                "mean": list(trainer.mean),
                "std": list(trainer.std),
                "classes": trainer.classes if method == "supervised" else None,
                "pretrain": {"method": method, "weights": weights, **summary},
            }
            path = write_model(trainer.run_dir / "teacher", model, state, card)
            summary["teacher"] = str(path)
            (trainer.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            write_card(trainer.run_dir)
            log.info("teacher written to %s (use teacher.source=%s)", path, path)
        return summary
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
