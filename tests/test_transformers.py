"""Teachers from Hugging Face transformers folders: small random transformers models are saved
here, read through ``build_teacher`` as timm ViTs, and must give the transformers model's own
hidden states and (eager) attention maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_STUDENT, cli

from attnxfer import AttnxferError, build_student, build_teacher
from attnxfer.analysis import attention_maps

T = pytest.importorskip("transformers")

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=4,
    attn_implementation="eager",  # transformers returns attention maps in eager mode only
)
#: family -> (config class, model class, extra config): task and pre-training classes too,
#: whose files keep the trunk under a prefix
FAMILIES = {
    "vit": ("ViTConfig", "ViTModel", {"intermediate_size": 64, "layer_norm_eps": 1e-6}),
    "vit_classifier": (
        "ViTConfig",
        "ViTForImageClassification",
        {"intermediate_size": 64, "layer_norm_eps": 1e-6, "num_labels": 5},
    ),
    "vit_mae": ("ViTMAEConfig", "ViTMAEModel", {"intermediate_size": 64, "layer_norm_eps": 1e-6}),
    "vit_mae_pretraining": (
        "ViTMAEConfig",
        "ViTMAEForPreTraining",
        {"intermediate_size": 64, "layer_norm_eps": 1e-6, "decoder_hidden_size": 16},
    ),
    "dinov2": ("Dinov2Config", "Dinov2Model", {"mlp_ratio": 2, "layerscale_value": 0.5}),
    "dinov2_registers": (
        "Dinov2WithRegistersConfig",
        "Dinov2WithRegistersModel",
        {"mlp_ratio": 2, "layerscale_value": 0.5, "num_register_tokens": 2},
    ),
}


def _save(folder: Path, family: str, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    model = getattr(T, model_cls)(getattr(T, config_cls)(**SMALL, **extra)).eval()
    with torch.no_grad():  # layer scale and class token away from their constant inits
        for name, p in model.named_parameters():
            if "lambda1" in name or "cls_token" in name or "register_tokens" in name:
                p.normal_()
    model.save_pretrained(folder)
    processor = {"image_mean": list(mean), "image_std": list(std)}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def _trunk(model):
    """The transformers trunk (ViTModel, ViTMAEModel, Dinov2Model) inside a task model."""
    return getattr(model, "vit", model)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_transformers_folder_gives_the_same_states_and_maps(tmp_path, family):
    hf = _save(tmp_path, family)
    teacher = build_teacher(tmp_path)
    images = torch.randn(2, 3, 16, 16)
    kwargs = {"output_attentions": True}
    if family.startswith("vit_mae"):
        # all patches, in order: no masking (ratio 0) and an increasing noise (no shuffle)
        _trunk(hf).config.mask_ratio = 0.0
        _trunk(hf).embeddings.config.mask_ratio = 0.0
        kwargs["noise"] = torch.arange(16.0).expand(2, 16)
    with torch.no_grad():
        out = _trunk(hf)(pixel_values=images, **kwargs)
        mine = teacher.forward_features(images)
    torch.testing.assert_close(mine, out.last_hidden_state, atol=2e-5, rtol=1e-4)
    maps = attention_maps(teacher, images)
    assert len(maps) == len(out.attentions) == 2
    for a, b in zip(maps, out.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert teacher.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_student_from_a_transformers_teacher_trains_by_distillation(tmp_path):
    _save(tmp_path / "dino", "dinov2_registers")
    teacher = build_teacher(tmp_path / "dino")
    student = build_student(teacher, num_classes=3)  # the teacher's architecture, fresh weights
    assert student.num_prefix_tokens == teacher.num_prefix_tokens == 3
    student_args = [a for a in TINY_STUDENT if not a.startswith("student.")]
    assert (
        cli(
            "train",
            *student_args,
            "data.train_subset=64",
            "transfer.mode=distill",
            f"teacher.source={tmp_path / 'dino'}",
            f"run.output={tmp_path / 'run'}",
        )
        == 0
    )
    assert (tmp_path / "run" / "summary.json").is_file()


def test_unsupported_transformers_model_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(AttnxferError, match="holds a transformers 'swin' model; attnxfer reads"):
        build_teacher(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(AttnxferError, match=r"no model\.safetensors or pytorch_model\.bin"):
        build_teacher(tmp_path)


def test_transformers_hub_id_reads_through_the_hub_cache(tmp_path, monkeypatch):
    """``hf-hub:org/name`` of a transformers repository: config, weights and preprocessor
    config are fetched (here from a local 'hub'), then read like a folder; offline, one line."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    hub = tmp_path / "hub"
    _save(hub, "vit_mae_pretraining", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    cache = tmp_path / "cache" / "snapshot"
    cache.mkdir(parents=True)
    fetched = []

    def download(repo_id, filename, revision=None, **_):
        assert repo_id == "facebook/vit-mae-tiny" and revision == "main"
        if not (hub / filename).is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        fetched.append(filename)
        (cache / filename).write_bytes((hub / filename).read_bytes())
        return str(cache / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    teacher = build_teacher("hf-hub:facebook/vit-mae-tiny@main")
    assert fetched == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert teacher.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    local = build_teacher(hub)
    for a, b in zip(teacher.state_dict().values(), local.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    def offline(**_):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: offline())
    with pytest.raises(AttnxferError, match=r"could not load .* pass the local file or folder"):
        build_teacher("hf-hub:facebook/vit-mae-tiny")
