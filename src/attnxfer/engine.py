"""Training: ``train(cfg)``, the :class:`Trainer` and the :class:`Task` protocol it trains.

One code path for every row of the paper's tables: the mode decides what ``AttentionTransfer``
does, everything else (data, optimiser, schedule, EMA, AMP, checkpoints, DDP) is shared.

Distributed: launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), the student
is trained with DDP (NCCL on GPUs, Gloo on CPUs); the frozen teacher's parameters are excluded
from DDP (nothing of it is broadcast or reduced). Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3, random_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint as C
from .build import build_model, teacher_record
from .config import Config, dump_config
from .data import (
    ResumableSampler,
    collate,
    evaluation_set,
    normalisation,
    raw_dataset,
    training_set,
    training_subset,
)
from .errors import AttnxferError, Stopped
from .inference import evaluate
from .models import spec_of
from .report import device_name
from .runtime import (
    STOP_SIGNALS,
    all_reduce,
    autocast,
    native_bf16,
    on_stop_signals,
    resolve_amp,
    setup_distributed,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# models


def build_optimization(
    cfg: Config, student: nn.Module, effective_batch: int, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, CosineLRScheduler, float]:
    """AdamW with layer-wise lr decay and no decay on norms/biases/embeddings; per-step
    warmup then half-cosine to ``min_lr`` (timm's optimiser and scheduler)."""
    o = cfg.optim
    lr = o.lr if o.lr is not None else o.blr * effective_batch / 256
    try:
        optimizer = create_optimizer_v2(
            student,
            opt=o.opt,
            lr=lr,
            weight_decay=o.weight_decay,
            layer_decay=o.layer_decay,
            betas=tuple(o.betas),
        )
    except (ValueError, AssertionError) as e:
        raise AttnxferError(f"cannot build optimiser optim.opt={o.opt!r}: {e}") from None
    total = max(1, o.epochs * steps_per_epoch)
    warmup = min(total - 1, round(o.warmup_epochs * steps_per_epoch))
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=o.min_lr,
        warmup_t=warmup,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    return optimizer, scheduler, lr


# ---------------------------------------------------------------------------------------------
# evaluation


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class Progress:
    """Counters that a checkpoint restores."""

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already consumed (whole updates only)
    step: int = 0  # optimiser updates so far
    skipped_steps: int = 0  # non-finite steps skipped (run.nonfinite=skip)
    skipped_images: int = 0  # unreadable images dropped (data.bad_images=skip)
    seconds: float = 0.0  # training time so far, over every invocation of a resumed run


class Task:
    """What a run trains, as the :class:`Trainer` sees it. The trainer owns data, optimiser,
    schedule, EMA, precision, DDP, checkpoints and logs; a task says what model to build, which
    losses one micro-batch gives, how to validate, and what a checkpoint records about it.
    """

    def build(self, cfg: Config, num_classes: int) -> tuple[nn.Module, nn.Module, dict | None]:
        """(module called on images, module trained, the teacher's pretrained config or None)."""
        raise NotImplementedError

    def losses(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Named float32 losses of one micro-batch (their sum is optimised) and the logits, if
        the task has any (for the running training accuracy)."""
        raise NotImplementedError

    def validate(self, trainer: Trainer) -> dict[str, float]:
        """Validation metrics of ``trainer.model`` as its weights are now (the trainer runs it
        again with the EMA weights)."""
        raise NotImplementedError

    def meta(self, trainer: Trainer) -> dict[str, Any]:
        """What a checkpoint records to rebuild and describe the model."""
        raise NotImplementedError


class Classification(Task):
    """A classifier trained by one of the modes of ``AttentionTransfer`` (scratch, fine-tune,
    copy, distillation, ...): cross-entropy plus the transfer loss."""

    def build(self, cfg: Config, num_classes: int) -> tuple[nn.Module, nn.Module, dict | None]:
        model, pretrained_cfg = build_model(cfg, num_classes)
        return model, model.student, pretrained_cfg

    def losses(self, model, images, targets, criterion):
        out = model(images)
        task = criterion(out.logits.float(), targets)
        return {"task": task, "transfer": out.transfer_loss.float()}, out.logits

    def validate(self, trainer: Trainer) -> dict[str, float]:
        return evaluate(trainer.model, trainer.val_loader, trainer.d, trainer.amp)

    def meta(self, trainer: Trainer) -> dict[str, Any]:
        mode = trainer.model.mode
        # copy modes cannot run without their teacher
        teacher = teacher_record(trainer.cfg.teacher) if mode.teacher_at_inference else None
        return {
            "config": trainer.cfg.to_dict(),
            "student_spec": spec_of(trainer.model.student).to_json(),
            "classes": trainer.classes,
            "mean": list(trainer.mean),
            "std": list(trainer.std),
            "needs_teacher": teacher,
            "transfer": trainer.model.describe(),
        }


def _sizes(model: nn.Module, trained: nn.Module) -> str:
    """One line: how many parameters are trained, and how many the frozen rest (the teacher) has."""
    n_trained = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    line = f"parameters: {n_trained / 1e6:.2f} M trained"
    return line + (f", {n_frozen / 1e6:.2f} M frozen (the teacher)" if n_frozen else "")


class Trainer:
    """Everything one training run holds; ``fit()`` runs it to the end. ``task`` (default
    :class:`Classification`) says what is trained."""

    def __init__(self, cfg: Config, resume: str | None = None, task: Task | None = None) -> None:
        self.cfg = cfg
        self.task = task or Classification()
        self.run_dir = Path(cfg.run.output)
        self.d = setup_distributed(cfg.run.device)
        ckpt = self._find_checkpoint(resume)  # checks only: nothing is written before the
        # data and models below have been built, so a bad input leaves no half-made run
        self.amp = resolve_amp(self.d.device, cfg.run.amp)
        autocast(self.d.device, self.amp)  # refuse a bad run.amp before anything is written
        if cfg.run.amp == "auto":
            log.info("run.amp=auto: %s on %s", self.amp, self.d.device)
        elif self.amp == "bf16" and not native_bf16(self.d.device):
            log.warning(
                "run.amp=bf16: this %s has no bfloat16 in hardware, so matmuls are emulated and "
                "much slower than float32; run.amp=auto picks the fast one",
                self.d.device.type,
            )
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        random_seed(cfg.run.seed, self.d.rank)  # torch, numpy (timm's Mixup) and random

        train_raw = raw_dataset(cfg.data, cfg.data.train_split)
        val_raw = raw_dataset(cfg.data, cfg.data.val_split, getattr(train_raw, "classes", None))
        self.classes = list(getattr(train_raw, "classes", []))
        train_raw = training_subset(train_raw, cfg.data.train_subset)
        model, trained, pretrained_cfg = self.task.build(cfg, len(self.classes))
        self.model = model.to(self.d.device)
        self.trained = trained  # the module that is optimised, averaged (EMA) and saved
        log.info("%s", _sizes(model, trained))
        self.mean, self.std = normalisation(cfg.data, pretrained_cfg)
        self._build_loaders(train_raw, val_raw)
        self._build_optimisation()
        self._build_objective()
        self.ddp = self._wrap_ddp()
        # what a training step calls: compiled once, on first use, when run.compile is set
        self.step_model = torch.compile(self.ddp) if cfg.run.compile else self.ddp
        self.progress = Progress()
        self._clock: tuple[float, float] | None = None  # set by fit()
        self._stop_signal: int | None = None  # set by a SIGTERM or SIGINT while fit() runs
        if ckpt is not None:
            self._restore(ckpt)
        if self.d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = C.lock_run_dir(self.run_dir)  # held until the process ends
            dump_config(cfg, self.run_dir / "config.yaml")
        self.metrics_file = self.run_dir / "metrics.jsonl"
        self.tensorboard = (
            _tensorboard_writer(self.run_dir / "tensorboard") if self.d.main else None
        )

    def _build_loaders(self, train_raw: Any, val_raw: Any) -> None:
        """Training and validation sets and loaders, and the steps an epoch holds."""
        cfg, d, b = self.cfg, self.d, self.cfg.data.batch_size
        self.train_set, self.dropped_images = training_set(
            cfg.data, train_raw, self.mean, self.std, cfg.run.seed
        )
        self.val_set = evaluation_set(cfg.data, val_raw, self.mean, self.std)
        self.sampler = ResumableSampler(len(self.train_set), True, cfg.run.seed, d.rank, d.world)
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=b,
            sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=collate,
            drop_last=True,
            worker_init_fn=_leave_stop_signals_to_the_trainer,
            # its own generator: creating an iterator must not draw from the global RNG,
            # or a run resumed mid-epoch would diverge (augmentation is seeded per sample)
            generator=torch.Generator().manual_seed(cfg.run.seed),
        )
        val_sampler = ResumableSampler(len(self.val_set), False, 0, d.rank, d.world, pad=False)
        self.val_loader = DataLoader(
            self.val_set,
            batch_size=b,
            sampler=val_sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=collate,
            worker_init_fn=_leave_stop_signals_to_the_trainer,
            generator=torch.Generator().manual_seed(0),
        )
        self.batches_per_epoch = len(self.train_set) // d.world // b
        accum = cfg.optim.accum_steps
        self.steps_per_epoch = self.batches_per_epoch // accum
        if self.steps_per_epoch == 0:
            raise AttnxferError(
                f"the training set ({len(self.train_set)} images) is smaller than one update "
                f"(batch {b} x accum {accum} x {d.world} processes): lower data.batch_size"
            )

    def _build_optimisation(self) -> None:
        """Optimiser, schedule, EMA and the fp16 loss scaler."""
        cfg = self.cfg
        effective = cfg.data.batch_size * cfg.optim.accum_steps * self.d.world
        self.optimizer, self.scheduler, self.lr = build_optimization(
            cfg, self.trained, effective, self.steps_per_epoch
        )
        self.ema = ModelEmaV3(self.trained, decay=cfg.run.ema_decay) if cfg.run.ema_decay else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")

    def _build_objective(self) -> None:
        """Mixup/CutMix and the classification criterion that matches them."""
        data = self.cfg.data
        mix = data.mixup > 0 or data.cutmix > 0
        self.mixup = (
            Mixup(
                mixup_alpha=data.mixup,
                cutmix_alpha=data.cutmix,
                label_smoothing=data.smoothing,
                num_classes=len(self.classes),
            )
            if mix
            else None
        )
        if mix:
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif data.smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(data.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    # -- run directory ----------------------------------------------------------------------

    def _find_checkpoint(self, resume: str | None) -> Path | None:
        run = self.run_dir
        if resume is None:
            if run.exists() and any(run.iterdir()):
                raise AttnxferError(
                    f"run directory {run} is not empty; continue it with --resume auto or "
                    "choose another run.output"
                )
            return None
        if resume == "auto":
            ckpt = C.latest_good(run)
            if ckpt is None and self.d.main:
                log.info("no usable checkpoint in %s: starting from the beginning", run)
            return ckpt
        return C.resolve(resume)

    def _wrap_ddp(self) -> nn.Module:
        if self.d.world == 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        # the frozen teacher (and any other frozen tensor) is neither broadcast nor reduced
        frozen = [n for n, p in self.model.named_parameters() if not p.requires_grad]
        teacher = getattr(self.model, "teacher", None)
        if teacher is not None:
            frozen += [f"teacher.{n}" for n, _ in teacher.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(self.model, frozen)
        # copy modes leave the student's q/k norms (qk-norm models) without gradient
        mode = getattr(self.model, "mode", None)
        unused = mode is not None and mode.teacher_at_inference
        ids = [self.d.device.index] if self.d.device.type == "cuda" else None
        return DDP(
            self.model, device_ids=ids, find_unused_parameters=unused, broadcast_buffers=False
        )

    # -- checkpoints ------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {**self.task.meta(self), "progress": vars(self.progress)}

    def save(self) -> Path | None:
        if self._clock is not None:  # the time trained so far goes into the checkpoint
            base, start = self._clock
            self.progress.seconds = base + time.time() - start
        if not self.d.main:
            return None
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": dict(vars(self.progress)),
            "rng": C.rng_state(),
        }
        ema = self.ema.module.state_dict() if self.ema is not None else None
        try:
            return self._write(state, ema)
        except OSError as e:
            good = C.latest_good(self.run_dir)
            raise AttnxferError(
                f"could not write checkpoint of step {self.progress.step} in {self.run_dir} "
                f"({e.strerror or e}); nothing partial was left and the last good checkpoint, "
                f"{good or 'none'}, is kept: free space or fix permissions, then --resume auto"
            ) from None

    def _write(self, state: dict[str, Any], ema: dict | None) -> Path:
        return C.save_checkpoint(
            self.run_dir,
            self.progress.step,
            self.trained.state_dict(),
            state,
            self._meta(),
            ema=ema,
            keep=self.cfg.run.keep_checkpoints,
        )

    def _restore(self, ckpt: Path) -> None:
        weights = C.load_weights_file(ckpt)
        own = {k: v.shape for k, v in self.trained.state_dict().items()}
        theirs = {k: v.shape for k, v in weights.items()}
        if own != theirs:
            differ = sorted(set(own) ^ set(theirs)) or sorted(k for k in own if own[k] != theirs[k])
            raise AttnxferError(
                f"checkpoint {ckpt} is of another architecture than this run's student (differs "
                f"in {differ[:3]}); resume with the config it was trained with"
            )
        self.trained.load_state_dict(weights)
        state = C.load_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(C.load_weights_file(ckpt, "ema.safetensors"))
        self.progress = Progress(**state["progress"])
        C.set_rng_state(state["rng"])
        if self.d.rank:  # other ranks continue their own streams, offset as at the start
            random_seed(self.cfg.run.seed + self.progress.step, self.d.rank)
        if self.d.main:
            log.info("resumed from %s (step %d)", ckpt, self.progress.step)

    # -- stopping on request -----------------------------------------------------------------

    def _ask_to_stop(self, signum: int, frame: Any) -> None:
        """While training, SIGTERM (what a batch scheduler sends before it preempts or cancels
        a job, and ``attnxfer sweep`` when another cell fails) and SIGINT (Ctrl-C) stop the run
        after the step in progress, with a checkpoint of that step, instead of killing it and
        losing the steps since the last checkpoint. A second Ctrl-C stops at once."""
        if signum == signal.SIGINT and self._stop_signal == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C
        if self._stop_signal is None:
            log.warning(
                "%s: stopping after this step, with a checkpoint of it%s",
                _name(signum),
                " (Ctrl-C again stops at once)" if signum == signal.SIGINT else "",
            )
        if self._stop_signal != signal.SIGINT:  # a Ctrl-C counts, whatever came before it
            self._stop_signal = signum

    def _stop_asked(self) -> bool:
        """Whether a stop was asked for, here or on any other process: they must all stop at the
        same step, so each step shares the request (one number, all-reduced as the loss's
        finiteness is)."""
        asked = float(self._stop_signal is not None)
        return (all_reduce([asked], self.d)[0] if self.d.world > 1 else asked) > 0

    def _stop(self, saved: Path | None) -> NoReturn:
        """Save a checkpoint of this step (unless ``saved`` is one) and raise :class:`Stopped`."""
        saved = saved or self.save()
        p, signum = self.progress, self._stop_signal or signal.SIGTERM  # or another process's
        where = f"checkpoint {saved}" if saved else f"rank 0's checkpoint in {self.run_dir}"
        raise Stopped(
            f"stopped by {_name(signum)} at step {p.step} of "
            f"{self.steps_per_epoch * self.cfg.optim.epochs}, {where} saved: the same command "
            "with --resume auto continues from it",
            signum,
        )

    # -- the loop ---------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if not self.d.main:
            return
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("epoch", "step"):
                    self.tensorboard.add_scalar(key, value, record["step"])
            self.tensorboard.flush()

    def fit(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        if self.d.main:
            log.info(
                "lr %.3g (effective batch %d), %d steps per epoch, %d epochs",
                self.lr,
                cfg.data.batch_size * cfg.optim.accum_steps * self.d.world,
                self.steps_per_epoch,
                cfg.optim.epochs,
            )
        self._clock = (p.seconds, time.time())  # earlier invocations' time, this one's start
        results: dict[str, Any] = {}
        with on_stop_signals(self._ask_to_stop):
            while p.epoch < cfg.optim.epochs:
                self.train_one_epoch()
                p.epoch += 1
                p.batch_in_epoch = 0
                if p.epoch % cfg.run.eval_every == 0 or p.epoch == cfg.optim.epochs:
                    results = self.evaluate_all()
                    self._log({"epoch": p.epoch, "step": p.step, **results})
                    if self.d.main:
                        log.info("epoch %d: %s", p.epoch, _fmt(results))
                saved = self.save()
                if p.epoch < cfg.optim.epochs and self._stop_asked():
                    self._stop(saved)
        base, start = self._clock
        summary = {
            "epochs": p.epoch,
            "steps": p.step,
            "seconds": base + time.time() - start,  # all invocations of the run
            "skipped_steps": p.skipped_steps,
            "skipped_images": p.skipped_images + self.dropped_images,
            "amp": self.amp,  # the precision trained in (run.amp=auto resolves per machine)
            # the processor that finished it (run.device is no part of a run's identity: a run
            # may be resumed, or an identical one taken, from another machine)
            "hardware": device_name(self.d.device, self.d.world),
            **results,
        }
        if self.d.main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def evaluate_all(self) -> dict[str, float]:
        out = {f"val_{k}": v for k, v in self.task.validate(self).items()}
        if self.ema is not None:
            with swapped_weights(self.trained, self.ema.module.state_dict()):
                ema = self.task.validate(self)
            out.update({f"ema_{k}": v for k, v in ema.items()})
        return out

    def train_one_epoch(self) -> None:
        cfg, p, d = self.cfg, self.progress, self.d
        accum = cfg.optim.accum_steps
        self.model.train()
        self.train_set.epoch = p.epoch
        self.sampler.set_epoch(p.epoch, start=p.batch_in_epoch * cfg.data.batch_size)
        total = self.batches_per_epoch - self.batches_per_epoch % accum
        bar = tqdm(
            total=total,
            initial=p.batch_in_epoch,
            disable=not d.main,
            desc=f"epoch {p.epoch + 1}/{cfg.optim.epochs}",
            dynamic_ncols=True,
            # into a file (a batch job's log, a sweep cell's) a redraw a minute, not one a step
            mininterval=0.1 if sys.stderr.isatty() else 60,
        )
        with bar:  # closed (its line ended) even when an error stops the epoch
            self._epoch_loop(bar, total)

    def _epoch_loop(self, bar: tqdm, total: int) -> None:
        cfg, p, d = self.cfg, self.progress, self.d
        accum = cfg.optim.accum_steps
        tick, seen = time.time(), 0
        batches = iter(self.train_loader)
        while p.batch_in_epoch < total:
            losses = self._accumulate(batches, accum)
            seen += losses.pop("images")
            p.batch_in_epoch += accum
            if losses.pop("nonfinite"):
                continue
            self._update()
            probed = any(k.startswith("grad_") for k in losses)
            if d.main and (p.step % cfg.run.log_every == 0 or p.batch_in_epoch == total or probed):
                rate = seen / max(time.time() - tick, 1e-9) * d.world
                lr = max(g["lr"] for g in self.optimizer.param_groups)
                record = {"epoch": p.epoch, "step": p.step, "lr": lr, "img_per_s": rate, **losses}
                self._log(record)
                parts = {
                    k: f"{v:.3f}"
                    for k, v in losses.items()
                    if k not in ("loss", "acc") and not k.startswith("grad_")
                }
                bar.set_postfix(
                    loss=f"{losses['loss']:.3f}",
                    **parts,
                    acc=losses.get("acc", "-"),
                    lr=f"{lr:.2e}",
                    ips=f"{rate:.0f}",
                    refresh=False,  # shown at the bar's next refresh
                )
            bar.update(accum)
            saved = None
            if cfg.run.ckpt_every_steps and p.step % cfg.run.ckpt_every_steps == 0:
                saved = self.save()
            if self._stop_asked():
                self._stop(saved)

    def _accumulate(self, batches, accum: int) -> dict[str, Any]:
        """Forward and backward ``accum`` micro-batches; gradients sync on the last one."""
        d, p = self.d, self.progress
        sums: dict[str, float] = {"loss": 0.0}
        correct, scored, images_seen = 0.0, 0, 0
        nonfinite = False
        every = self.cfg.run.grad_probe_every
        probe = d.main and every is not None and p.step % every == 0
        probes: dict[str, float] = {}
        for micro in range(accum):
            batch = next(batches)
            p.skipped_images += batch.skipped
            if batch.targets.numel() == 0:
                continue
            images, targets = batch.images.to(d.device), batch.targets.to(d.device)
            hard = targets
            if self.mixup is not None:
                if images.shape[0] % 2:  # timm's Mixup needs an even batch
                    images, targets, hard = images[:-1], targets[:-1], hard[:-1]
                images, targets = self.mixup(images, targets)
            sync = micro == accum - 1 or d.world == 1
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx, autocast(d.device, self.amp):
                parts, logits = self.task.losses(self.step_model, images, targets, self.criterion)
                loss = sum(parts.values())
            flags = all_reduce([float(not torch.isfinite(loss))], d)
            if flags[0]:
                nonfinite = True
                self._nonfinite(parts)
                break
            if micro == 0 and probe:
                probes = self._probe_gradients(parts)
            self.scaler.scale(loss / accum).backward()
            sums["loss"] += loss.item() / accum
            for name, part in parts.items():
                sums[name] = sums.get(name, 0.0) + part.item() / accum
            images_seen += images.shape[0]
            if self.mixup is None and logits is not None:
                correct += (logits.argmax(-1) == hard).float().sum().item()
                scored += images.shape[0]
        if nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
        result: dict[str, Any] = {**sums, **probes, "images": images_seen}
        if scored:
            result["acc"] = round(100 * correct / scored, 2)
        result["nonfinite"] = nonfinite
        return result

    def _probe_gradients(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """The gradient of each loss part on the trained weights, apart: ``grad_<part>`` its
        norm and ``grad_cos`` the cosine between the first two parts' gradients (for a
        classification run, the task loss's and the weighted transfer loss's); the same for
        each transformer block's weights alone, suffixed ``_block<i>``. Taken on the main
        process's first micro-batch of the step, before the step's own backward;
        ``torch.autograd.grad`` leaves the ``.grad`` fields and DDP's hooks alone, so training
        goes on exactly as it would without it."""
        named = [(n, q) for n, q in self.trained.named_parameters() if q.requires_grad]
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        grads = {
            name: torch.autograd.grad(
                part * scale, [q for _, q in named], retain_graph=True, allow_unused=True
            )
            for name, part in parts.items()
            if part.requires_grad
        }
        groups: dict[str, list[int]] = {"": list(range(len(named)))}
        for i, (n, _) in enumerate(named):
            if n.startswith("blocks."):
                groups.setdefault(f"_block{n.split('.')[1]}", []).append(i)

        def dot(a: tuple, b: tuple, members: list[int]) -> float:
            pairs = [(a[i], b[i]) for i in members if a[i] is not None and b[i] is not None]
            return float(sum((x.float() * y.float()).sum() for x, y in pairs)) / scale**2

        out: dict[str, float] = {}
        for suffix, members in groups.items():
            norms = [dot(g, g, members) ** 0.5 for g in grads.values()]
            out.update({f"grad_{n}{suffix}": v for n, v in zip(grads, norms, strict=True)})
            if len(grads) >= 2:
                a, b = list(grads.values())[:2]
                both = norms[0] * norms[1]
                out[f"grad_cos{suffix}"] = dot(a, b, members) / both if both > 0 else 0.0
        return out

    def _nonfinite(self, parts: dict[str, torch.Tensor]) -> None:
        p, cfg = self.progress, self.cfg
        what = ", ".join(f"{name} loss {part.item():.4g}" for name, part in parts.items())
        if cfg.run.nonfinite == "skip" and p.skipped_steps < cfg.run.max_skipped_steps:
            p.skipped_steps += 1
            log.warning(
                "non-finite loss at step %d (%s): step skipped (%d of at most %d)",
                p.step,
                what,
                p.skipped_steps,
                cfg.run.max_skipped_steps,
            )
            return
        good = C.latest_good(self.run_dir)
        raise AttnxferError(
            f"non-finite loss at step {p.step} ({what}); training stopped. The last good "
            f"checkpoint is {good or 'none (no checkpoint written yet)'}; lower the learning "
            "rate or set run.nonfinite=skip"
        )

    def _update(self) -> None:
        cfg = self.cfg
        if cfg.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trained.parameters(), cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        self.scheduler.step_update(self.progress.step)
        if self.ema is not None:
            self.ema.update(self.trained, step=self.progress.step)


def _tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed, else ``None``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


@contextlib.contextmanager
def swapped_weights(module: nn.Module, weights: dict[str, torch.Tensor]):
    """Temporarily load ``weights`` into ``module`` (evaluate EMA weights through the wrapper)."""
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(weights)
    try:
        yield module
    finally:
        module.load_state_dict(saved)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A data-loading worker ignores SIGTERM and SIGINT: a scheduler signals every process of a
    job, and Ctrl-C every process of the terminal's foreground job; a worker that died of it
    would fail the step the trainer finishes before it stops. The trainer ends its workers when
    it stops, and a worker whose trainer is gone ends itself."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _fmt(results: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items()
    )


def train(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Run training to the end; returns the summary (also written to ``summary.json``)."""
    trainer = Trainer(cfg, resume)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
