"""Analyses: JS divergence against scipy, head pairings, maps in use, locality, counts, the
commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import TINY_STUDENT, cli, images, tiny_vit
from scipy.spatial.distance import jensenshannon

from attnxfer import AttentionTransfer, build_student
from attnxfer.analysis import (
    attention_maps,
    count_table,
    head_costs,
    js_divergence,
    layer_locality,
    layer_similarity,
    map_locality,
    pair_heads,
    transfer_counts,
)
from attnxfer.errors import AttnxferError


def _dists(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64).softmax(-1)


def test_js_divergence_matches_scipy_and_its_properties():
    p, q = _dists(50, 17), _dists(50, 17, seed=1)
    p[0, :5] = 0  # zeros: 0 log 0 = 0
    p[0] /= p[0].sum()
    ours = js_divergence(p, q)
    pairs = zip(p.numpy(), q.numpy(), strict=True)
    ref = torch.tensor([jensenshannon(a, b) ** 2 for a, b in pairs])
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(js_divergence(q, p), ours)  # symmetric
    assert js_divergence(p, p).abs().max() < 1e-15  # zero for identical maps
    disjoint = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert js_divergence(disjoint[:1], disjoint[1:]).item() == pytest.approx(math.log(2))
    assert (ours <= math.log(2)).all() and (ours >= 0).all()


def test_head_pairings_on_a_head_permutation():
    a = _dists(3, 4, 9, 9)
    perm = [2, 0, 3, 1]
    b = a[:, perm]
    cost = head_costs(a, b) / 3
    assert pair_heads(cost, "hungarian") == pytest.approx(0, abs=1e-15)
    assert pair_heads(cost, "best") == pytest.approx(0, abs=1e-15)
    assert pair_heads(cost, "index") > 0.01
    assert pair_heads(cost, "best") <= pair_heads(cost, "hungarian") <= pair_heads(cost, "index")
    with pytest.raises(AttnxferError, match="equal head counts"):
        pair_heads(head_costs(a, b[:, :3]), "index")
    with pytest.raises(AttnxferError, match="unknown head pairing"):
        pair_heads(cost, "greedy")
    # cost[i, j] is the plain mean of the per-query divergences
    rows = zip(a[0, 1].numpy(), b[0, 2].numpy(), strict=True)
    ref = np.mean([jensenshannon(x, y) ** 2 for x, y in rows])
    assert head_costs(a[:1], b[:1])[1, 2].item() == pytest.approx(ref, rel=1e-9)


def test_maps_in_use_and_similarity_of_copy_and_distill_students():
    teacher = tiny_vit("vit", seed=0)
    x = images(4)
    torch.manual_seed(1)
    copy = AttentionTransfer(teacher, build_student(teacher, 7), mode="copy").eval()
    torch.manual_seed(1)
    copy_q = AttentionTransfer(teacher, build_student(teacher, 7), mode="copy_q").eval()
    torch.manual_seed(1)
    own = build_student(teacher, 7).eval()
    t_maps = attention_maps(teacher, x)
    for a, b in zip(attention_maps(copy, x), t_maps, strict=True):
        torch.testing.assert_close(a, b)  # a copy student attends with the teacher's maps
    q_maps = attention_maps(copy_q, x)
    assert all((q - t).abs().max() > 1e-4 for q, t in zip(q_maps, t_maps, strict=True))
    sim = layer_similarity(copy, teacher, [x[:2], x[2:]])
    for pairing, values in sim.items():
        assert len(values) == len(teacher.blocks)
        assert max(values) < 1e-9, pairing
    far = layer_similarity(own, teacher, [x])
    assert min(far["index"]) > 1e-6  # near-uniform random maps: small but not zero
    assert all(b <= i + 1e-12 for b, i in zip(far["best"], far["index"], strict=True))


def test_locality_of_maps_with_known_answers():
    """A 2x2 grid after one class token. Head 0 attends to itself: distance 0, entropy 0.
    Head 1 spreads evenly over the three other patches: distance (1 + 1 + sqrt 2) / 3, entropy
    log 3. Head 2 puts half on the class token, half on itself. Head 3 is uniform over all five
    tokens: the reference values."""
    eye = torch.eye(4, dtype=torch.float64)
    maps = torch.zeros(2, 4, 5, 5, dtype=torch.float64)  # two images
    maps[:, 0, 1:, 1:] = eye
    maps[:, 1, 1:, 1:] = (1 - eye) / 3
    maps[:, 2, 1:, 0] = 0.5
    maps[:, 2, 1:, 1:] = eye / 2
    maps[:, 3] = 0.2
    maps[:, :, 0] = 0.2  # the class token's own row is not measured
    got = {k: v / 8 for k, v in map_locality(maps, (2, 2), prefix=1).items() if k != "queries"}
    uniform = (8 + 4 * math.sqrt(2)) / 16  # mean over the 16 ordered pairs, self pairs too
    expected = {
        "distance": [0, (2 + math.sqrt(2)) / 3, 0, uniform],
        "entropy": [0, math.log(3), math.log(2), math.log(5)],
        "prefix": [0, 0, 0.5, 0.2],
    }
    for key, values in expected.items():
        torch.testing.assert_close(got[key], torch.tensor(values, dtype=torch.float64))
    with pytest.raises(AttnxferError, match="do not match 1 prefix tokens and a 3x3 grid"):
        map_locality(maps, (3, 3), prefix=1)


def test_layer_locality_averages_over_batches_and_heads():
    teacher = tiny_vit("vit", seed=0)  # 24 px, patch 4: a 6x6 grid, a class token, 4 heads
    x = images(4)
    whole = layer_locality(teacher, [x])
    split = layer_locality(teacher, [x[:1], x[1:]])
    for key in ("distance", "entropy", "prefix"):
        assert len(whole[key]) == len(teacher.blocks)
        torch.testing.assert_close(torch.tensor(split[key]), torch.tensor(whole[key]))
        for layer, heads in zip(whole[key], whole["heads"][key], strict=True):
            assert len(heads) == 4 and layer == pytest.approx(sum(heads) / 4)
    # a fresh ViT attends almost evenly: close to the uniform map's values, never above them
    assert whole["max_entropy"] == pytest.approx(math.log(37))
    assert all(math.log(37) - 0.1 < e <= math.log(37) + 1e-9 for e in whole["entropy"])
    assert all(abs(d - whole["uniform_distance"]) < 0.2 for d in whole["distance"])
    with pytest.raises(AttnxferError, match="no images"):
        layer_locality(teacher, [])


def test_model_spec_takes_existing_paths_with_equals_signs_whole(tmp_path):
    """A sweep's cell folder (``heads=1``) is a source as written, labelled or not."""
    from attnxfer.analyze import model_spec

    cell = tmp_path / "heads=1"
    cell.mkdir()
    assert model_spec(str(cell)) == ("heads=1", str(cell))
    assert model_spec(f"one head={cell}") == ("one head", str(cell))
    assert model_spec("tiny=vit_tiny_patch16_224") == ("tiny", "vit_tiny_patch16_224")
    assert model_spec("vit_tiny_patch16_224") == ("vit_tiny_patch16_224", "vit_tiny_patch16_224")


def test_transfer_counts_follow_the_formulae():
    c = transfer_counts(tiny_vit("vit"))  # 24 px, patch 4: 36 patches + class token
    assert c["tokens"] == 37 and c["heads"] == 4 and c["dim"] == 32 and c["depth"] == 3
    assert c["per_layer"] == {"q_or_k": 37 * 32, "q_and_k": 2 * 37 * 32, "maps": 4 * 37 * 37}
    assert c["total"]["maps"] == 3 * 4 * 37 * 37
    (row,) = count_table(["vit_large_patch16_224"], [224])
    assert row["tokens"] == 197 and row["per_layer"]["maps"] == 16 * 197 * 197
    with pytest.raises(AttnxferError, match="cannot build"):
        count_table(["vit_nope"], [224])


def test_analyze_commands(tmp_path, capsys, teacher_file):
    run = tmp_path / "distill"
    assert (
        cli(
            "train",
            f"teacher.source={teacher_file}",
            "transfer.mode=distill",
            f"run.output={run}",
            *TINY_STUDENT[1:],
        )
        == 0
    )
    out = tmp_path / "sim"
    assert (
        cli(
            "analyze",
            "similarity",
            f"distilled={run}",
            f"random=random:{teacher_file}",
            "--reference",
            str(teacher_file),
            "--data",
            "digits",
            "--images",
            "16",
            "--out",
            str(out),
        )
        == 0
    )
    result = json.loads((out / "similarity.json").read_text())
    assert set(result["models"]) == {"distilled", "random"} and result["images"] == 16
    assert set(result["models"]["distilled"]) == {"index", "hungarian", "best", "averaged"}
    assert (out / "similarity.png").stat().st_size > 0
    assert "| distilled | hungarian |" in (out / "similarity.md").read_text()
    maps = tmp_path / "maps"
    assert (
        cli(
            "analyze",
            "maps",
            str(teacher_file),
            str(run),
            "--data",
            "digits",
            "--layers",
            "0,-1",
            "--queries",
            "0,5",
            "--out",
            str(maps),
        )
        == 0
    )
    assert sorted(p.name for p in maps.iterdir()) == ["maps_layer0.png", "maps_layer1.png"]
    where = tmp_path / "locality"
    assert (
        cli(
            "analyze",
            "locality",
            f"teacher={teacher_file}",
            f"distilled={run}",
            "--data",
            "digits",
            "--images",
            "8",
            "--out",
            str(where),
        )
        == 0
    )
    result = json.loads((where / "locality.json").read_text())
    assert set(result["models"]) == {"teacher", "distilled"} and result["images"] == 8
    assert (where / "locality.png").stat().st_size > 0
    report = (where / "locality.md").read_text()
    assert "| distilled | distance |" in report
    heads = result["models"]["distilled"]["heads"]["distance"]
    assert f"| distilled | {' / '.join(f'{v:.2f}' for v in heads[0])} |" in report
    # --update: the report gains a model; the others are kept as measured, in their order
    loc = ["analyze", "locality", "--data", "digits", "--out", str(where), "--update"]
    assert cli(*loc, "--images", "8", f"random=random:{teacher_file}") == 0
    updated = json.loads((where / "locality.json").read_text())
    assert list(updated["models"]) == ["teacher", "distilled", "random"]
    assert updated["models"]["distilled"] == result["models"]["distilled"]
    assert "| random | distance |" in (where / "locality.md").read_text()
    capsys.readouterr()
    assert cli(*loc, "--images", "16", f"teacher={teacher_file}") == 2
    assert "measured 8 images, teacher 16: pass --images 8" in capsys.readouterr().err
    assert cli(*loc, "--split", "train", "--images", "8", f"teacher={teacher_file}") == 2
    assert "pass the same --data and --split" in capsys.readouterr().err
    assert json.loads((where / "locality.json").read_text()) == updated  # nothing lost
    other = tmp_path / "other"
    other.mkdir()
    (other / "locality.json").write_text('{"rows": []}')
    assert cli(*loc[:4], "--out", str(other), "--update", "--images", "8", str(teacher_file)) == 2
    assert "is not a locality report (no key 'models')" in capsys.readouterr().err
    capsys.readouterr()
    assert (
        cli(
            "analyze",
            "maps",
            str(teacher_file),
            "--data",
            "digits",
            "--layers",
            "7",
            "--out",
            str(maps),
        )
        == 2
    )
    assert "layer 7 out of range" in capsys.readouterr().err
    assert (
        cli(
            "analyze",
            "count",
            "--models",
            "vit_base_patch16_224",
            "--sizes",
            "224,1024",
            "--out",
            str(tmp_path / "count"),
        )
        == 0
    )
    assert "| vit_base_patch16_224 | 1024 | 4097 |" in (tmp_path / "count" / "count.md").read_text()
