"""The config loader: strict keys, checked types, overrides; never a traceback."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from attnxfer import AttnxferError
from attnxfer.config import (
    Config,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
    reference,
)


def test_defaults_and_overrides():
    cfg = load_config(
        [],
        [
            "optim.blr=1e-3",
            "transfer.layers=0-17",
            "transfer.heads=[0, 1]",
            "data.mean=[0.5,0.5,0.5]",
            "run.ema_decay=null",
            "optim.epochs=3",
        ],
    )
    assert cfg.optim.blr == 1e-3 and isinstance(cfg.optim.blr, float)  # "1e-3" is a YAML string
    assert cfg.transfer.layers == "0-17" and cfg.transfer.heads == [0, 1]
    assert cfg.run.ema_decay is None and cfg.optim.epochs == 3
    assert isinstance(load_config([], ["optim.blr=1"]).optim.blr, float)


def test_files_merge_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {epochs: 5, blr: 0.1}\nrun: {seed: 3}\n")
    (tmp_path / "b.yaml").write_text("optim: {epochs: 7}\n")
    cfg = load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"], ["run.seed=4"])
    assert (cfg.optim.epochs, cfg.optim.blr, cfg.run.seed) == (7, 0.1, 4)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config([], ["transfer.mode=copy", "student.model_args={depth: 3}"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config([tmp_path / "c.yaml"]) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"optim": {"epoch": 3}}, r"unknown config key optim.epoch .* valid keys: accum_steps"),
        ({"optimiser": {}}, "unknown config key optimiser at the top level"),
        ({"optim": {"epochs": "ten"}}, "optim.epochs must be an integer"),
        ({"optim": {"epochs": 2.5}}, "optim.epochs must be an integer"),
        ({"optim": {"epochs": True}}, "optim.epochs must be an integer"),
        ({"run": {"deterministic": "yes please"}}, "run.deterministic must be true/false"),
        ({"optim": "fast"}, "section 'optim' must be a mapping"),
        ({"data": {"mean": 0.5}}, "data.mean must be a list or null"),
    ],
)
def test_bad_configs(data, message):
    with pytest.raises(AttnxferError, match=message):
        config_from_dict(data)


_keys = st.text(string.ascii_lowercase + "_.", min_size=1, max_size=20)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_known = st.sampled_from(
    [f"{section}.{name}" for section, fields in Config().to_dict().items() for name in fields]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_known | _keys, _values), max_size=4))
def test_random_configs_never_traceback(pairs):
    """Any mix of real and random keys with random values is a valid config or a clear error."""
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in pairs]
    overrides = [o.removesuffix("\n...") for o in overrides]
    try:
        cfg = load_config([], overrides)
    except AttnxferError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(cfg, Config)


def test_override_syntax():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert parse_override("transfer.layers=first:2,last:2") == {
        "transfer": {"layers": "first:2,last:2"}
    }
    for bad in ("noequals", "=3", "a..b=1", ".a=1"):
        with pytest.raises(AttnxferError, match=r"section\.key=value"):
            parse_override(bad)


def test_config_reference_is_current():
    """docs/config.md is what attnxfer.config.reference() generates (regenerate it with
    ``python -c "from attnxfer.config import reference; print(reference(), end='')"``)."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text() == reference()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be at least 1, got 0"),
        ("data.hflip=1.5", r"data.hflip must be in \[0, 1\]"),
        ("optim.blr=.inf", "optim.blr must be a finite number"),
        ("transfer.layers=a-b", "transfer.layers must be 'all', 'none'"),
        ("transfer.heads=[0, x]", "transfer.heads must be 'all', a count K"),
        ("data.auto_augment=rand-m9-zz", "data.auto_augment must be a timm augmentation"),
        ("optim.opt=adamz", "optim.opt must be a timm optimiser name"),
        ("student.arch=vit_gigantic_patch3", "student.arch must be a timm model name"),
        ("optim.warmup_epochs=11", "optim.warmup_epochs=11 is longer than optim.epochs=10"),
    ],
)
def test_rules_refuse_at_load(override, message):
    with pytest.raises(AttnxferError, match=message):
        load_config([], [override])


@pytest.mark.parametrize(
    "override",
    [
        "data.auto_augment=rand-m9-mstd0.5-inc1",
        "data.auto_augment=augmix-m5-w3",
        "data.auto_augment=v0",
        "optim.opt=lookahead_adamw",
        "transfer.layers=first:2,last:2",
        "transfer.layers=end_layer:-3",
        "transfer.heads=3",
        "student.arch=vit_small_patch16_224.augreg_in21k",
    ],
)
def test_rules_accept_what_the_libraries_accept(override):
    load_config([], [override])


def test_sections_made_in_python_are_checked():
    from attnxfer.config import DataConfig

    with pytest.raises(AttnxferError, match=r"data\.img_size must be at least 1"):
        DataConfig(img_size=0)
    assert DataConfig(hflip=1).hflip == 1.0 and isinstance(DataConfig(hflip=1).hflip, float)
