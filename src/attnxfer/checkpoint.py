"""Checkpoints that survive crashes: atomic directories with checksums.

A checkpoint is a directory ``<run>/checkpoints/step_<N>/`` holding

- ``student.safetensors``: the student's weights (plain timm keys);
- ``ema.safetensors``: the EMA weights, when EMA is on;
- ``state.pt``: optimiser, scheduler, grad scaler, counters and RNG states (``weights_only``
  loadable: tensors, numbers, strings, lists and dicts only);
- ``meta.json``: the resolved config, the student's ``ModelSpec``, the teacher it needs (copy
  modes), and the SHA-256 of every file above. Written last.

It is written as ``step_<N>.tmp-<pid>`` and renamed into place only after every file is written
and fsynced, so a crash mid-write leaves the previous checkpoint untouched; resuming picks the
newest directory whose files match their checksums.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import AttnxferError

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
META = "meta.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_plain_to_numpy_state(state["numpy"]))
    random.setstate(_plain_to_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# numpy and python RNG states hold types torch.load(weights_only=True) refuses; store as tensors.
def _numpy_state_to_plain(state: tuple) -> dict:
    name, keys, pos, has_gauss, gauss = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def _plain_to_numpy_state(d: dict) -> tuple:
    keys = d["keys"].numpy().astype(np.uint32)
    return (d["name"], keys, d["pos"], d["has_gauss"], d["gauss"])


def _python_state_to_plain(state: tuple) -> dict:
    version, internal, gauss = state
    return {
        "version": version,
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }


def _plain_to_python_state(d: dict) -> tuple:
    return (d["version"], tuple(int(x) for x in d["internal"].tolist()), d["gauss"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    student: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep`` checkpoints."""
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files = {"student.safetensors": student}
        if ema is not None:
            files["ema.safetensors"] = ema
        for name, tensors in files.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / name)
        torch.save(state, tmp / "state.pt")
        checksums = {}
        for path in sorted(tmp.iterdir()):
            _fsync_file(path)
            checksums[path.name] = _sha256(path)
        (tmp / META).write_text(json.dumps({**meta, "step": step, "sha256": checksums}, indent=1))
        _fsync_file(tmp / META)
        _fsync_dir(tmp)
        if final.exists():  # same step written again (resumed run): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def lock_run_dir(run_dir: Path) -> Any:
    """Take the run directory's lock (``.lock``), or refuse if another process holds it.

    An advisory ``flock``: released by the OS when the process ends, even by SIGKILL, so a
    killed run never leaves a stale lock. Returns the open file, which must be kept alive.
    """
    import fcntl

    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AttnxferError(
            f"run directory {run_dir} is in use by another attnxfer process (pid {holder}); "
            "wait for it to finish or choose another run.output"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step_") and ".tmp" not in p.name
    )


def verify(ckpt: Path) -> str | None:
    """``None`` when every file matches its recorded checksum, else what is wrong."""
    meta_path = ckpt / META
    if not meta_path.is_file():
        return "no meta.json (incomplete write)"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "meta.json is corrupt"
    for name, digest in meta.get("sha256", {}).items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum (corrupt or truncated)"
    return None


def latest_good(run_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; corrupt ones are reported and skipped."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        log.warning("checkpoint %s is unusable: %s; trying an older one", ckpt, problem)
    return None


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (its newest good one) or a checkpoint dir."""
    path = Path(path)
    if (path / META).is_file():
        problem = verify(path)
        if problem:
            raise AttnxferError(f"checkpoint {path} is unusable: {problem}")
        return path
    if (path / CKPT_DIR).is_dir():
        good = latest_good(path)
        if good is None:
            raise AttnxferError(f"run {path} has no usable checkpoint")
        return good
    raise AttnxferError(
        f"{path} is neither a run directory nor a checkpoint directory (expected {META} or "
        f"{CKPT_DIR}/ inside)"
    )


def read_meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / META).read_text())


def load_weights_file(ckpt: Path, name: str = "student.safetensors") -> dict[str, torch.Tensor]:
    return load_file(ckpt / name)


def load_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
