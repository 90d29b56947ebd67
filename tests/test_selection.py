import pytest

from attnxfer import AttnxferError, parse_heads, parse_layers


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, tuple(range(24))),
        ("all", tuple(range(24))),
        ("none", ()),
        (5, (5,)),
        ("5", (5,)),
        ([0, 2, 5], (0, 2, 5)),
        ("0,2,5", (0, 2, 5)),
        ("0-17", tuple(range(18))),
        ("first:12", tuple(range(12))),
        ("last:6", tuple(range(18, 24))),
        ("end_layer:-3", tuple(range(21))),  # the reference's default: 21 of 24 layers
        ("first:2,last:2", (0, 1, 22, 23)),
        ("3-5,4", (3, 4, 5)),
    ],
)
def test_layer_specs(spec, expected):
    assert parse_layers(spec, 24) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (24, "out of range"),
        ("0-24", "out of range"),
        ("last:25", "between 0 and 24"),
        ("end_layer:-25", "end_layer"),
        ("end_layer:3", "end_layer"),
        ("5-2", "empty"),
        ("top:3", "invalid"),
        ("x", "invalid"),
        ("", "empty"),
        ([1.5], "invalid"),
        (True, "invalid"),
        ("-1", "out of range"),
    ],
)
def test_bad_layer_specs(spec, message):
    with pytest.raises(AttnxferError, match=message):
        parse_layers(spec, 24)


def test_head_specs():
    assert parse_heads(None, 16) == tuple(range(16))
    assert parse_heads("all", 16) == tuple(range(16))
    assert parse_heads(12, 16) == tuple(range(12))
    assert parse_heads([3, 1], 16) == (1, 3)
    assert parse_heads("last:4", 16) == (12, 13, 14, 15)
    for bad, message in [
        (0, "out of range"),
        (17, "out of range"),
        ("16", "out of range"),
        ("none", "empty"),
        ("end_layer:-1", "invalid"),
    ]:
        with pytest.raises(AttnxferError, match=message):
            parse_heads(bad, 16)


def test_head_pairing():
    from attnxfer.selection import pair_heads

    assert pair_heads((0, 1, 2), 4, 4) == (0, 1, 2)  # index pairing
    assert pair_heads((0, 1), 2, 6, "average") == (0, 1, 2, 3, 4, 5)  # groups of 3 per head
    assert pair_heads((1,), 2, 6, "average") == (3, 4, 5)
    assert pair_heads((0, 1, 2, 3), 4, 2, "average") == (0, 0, 1, 1)  # a teacher head per pair
    assert pair_heads((0, 1), 4, 6, [5, 0]) == pair_heads((0, 1), 4, 6, "5,0") == (5, 0)
    for args, message in [
        (((0, 5), 6, 4, None), "student head 5 is selected but the teacher has only 4 heads"),
        (((0,), 4, 6, "average"), "needs one head count to divide the other"),
        (((0, 1), 4, 6, [1]), "lists 1 teacher heads for 2 selected student heads"),
        (((0,), 4, 6, [6]), "names teacher head 6, but the teacher has heads 0..5"),
        (((0,), 4, 6, "a,b"), "is not 'index', 'average' or teacher head indices"),
    ]:
        with pytest.raises(AttnxferError, match=message):
            pair_heads(*args)
