"""attnxfer: attention transfer (copy and distillation) for Vision Transformers.

.. code-block:: python

    from attnxfer import build_teacher, build_student, AttentionTransfer

    teacher = build_teacher("vit_base_patch16_224.mae")
    student = build_student(teacher, num_classes=100)
    model = AttentionTransfer(teacher, student, mode="distill", layers="all", weight=3.0)
    out = model(images)
    loss = criterion(out.logits, targets) + out.transfer_loss
"""

from .errors import AttnxferError
from .models import ModelSpec, build_student, build_teacher, read_checkpoint
from .selection import parse_heads, parse_layers
from .transfer import MODES, AttentionTransfer, TransferOutput

__all__ = [
    "MODES",
    "AttentionTransfer",
    "AttnxferError",
    "ModelSpec",
    "TransferOutput",
    "build_student",
    "build_teacher",
    "parse_heads",
    "parse_layers",
    "read_checkpoint",
]
__version__ = "0.1.0"
