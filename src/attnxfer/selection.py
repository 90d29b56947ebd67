"""Which layers and which heads are transferred.

Layer specs (``depth`` = number of blocks; indices are 0-based and inclusive in ranges):

- ``"all"``: every block; ``"none"``: no block.
- ``5`` or ``"5"``: one block; ``[0, 2, 5]`` or ``"0,2,5"``: a list.
- ``"0-17"``: an inclusive range.
- ``"first:12"``: blocks ``0 .. 11``; ``"last:6"``: the last six blocks.
- ``"end_layer:-3"``: the reference implementation's ``end_layer=-3``: blocks
  ``0 .. depth-4``, i.e. all but the last three. (The reference parses ``--end_layer`` but never
  passes it to the model, so all its released runs used -3; here the value you write is the value
  used.)

Comma-separated items are combined, e.g. ``"first:2,last:2"``.

Head specs (``num_heads`` = heads per block): ``None`` or ``"all"``: every head; an ``int`` k:
the first k heads; a list or ``"0,3,5"``: explicit indices; ``"first:k"`` / ``"last:k"`` as above.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import AttnxferError

Spec = str | int | Sequence[int] | None

_LAYER_HELP = (
    "use 'all', 'none', an index, a list '0,2,5', a range '0-17', 'first:K', 'last:K' "
    "or 'end_layer:-K'"
)


def _parse_items(spec: Spec, size: int, what: str, help_text: str) -> tuple[int, ...]:
    if spec is None:
        return tuple(range(size))
    if isinstance(spec, bool):
        raise AttnxferError(f"invalid {what} selection {spec!r}: {help_text}")
    if isinstance(spec, int):
        items: list[str] = [str(spec)]
    elif isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
        if not items:
            raise AttnxferError(f"empty {what} selection {spec!r}: {help_text}")
    else:
        items = []
        for value in spec:
            if isinstance(value, bool) or not isinstance(value, int):
                raise AttnxferError(f"invalid {what} index {value!r} in {spec!r}: {help_text}")
            items.append(str(value))
    chosen: set[int] = set()
    for item in items:
        chosen.update(_parse_item(item, size, what, help_text))
    return tuple(sorted(chosen))


def _parse_count(text: str, item: str, what: str, help_text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AttnxferError(f"invalid {what} selection {item!r}: {help_text}") from None


def _parse_item(item: str, size: int, what: str, help_text: str) -> range | list[int]:
    key, sep, value = item.partition(":")
    if item == "all":
        return range(size)
    if item == "none":
        return []
    if sep:
        count = _parse_count(value, item, what, help_text)
        if key in ("first", "last"):
            if not 0 <= count <= size:
                raise AttnxferError(
                    f"{what} selection {item!r} asks for {count} of {size} {what}s: "
                    f"K must be between 0 and {size}"
                )
            return range(count) if key == "first" else range(size - count, size)
        if key == "end_layer" and what == "layer":
            if not -size <= count < 0:
                raise AttnxferError(
                    f"layer selection {item!r}: end_layer must be negative and at least "
                    f"{-size} for a {size}-layer model (it means 'all but the last K')"
                )
            return range(size + count)
        raise AttnxferError(f"invalid {what} selection {item!r}: {help_text}")
    lo_text, dash, hi_text = item.partition("-")
    if dash and lo_text:
        lo = _parse_count(lo_text, item, what, help_text)
        hi = _parse_count(hi_text, item, what, help_text)
        if lo > hi:
            raise AttnxferError(f"{what} range {item!r} is empty: write it as LOW-HIGH")
        indices = [lo, hi]
        out: range | list[int] = range(lo, hi + 1)
    else:
        index = _parse_count(item, item, what, help_text)
        indices = [index]
        out = [index]
    for index in indices:
        if not 0 <= index < size:
            raise AttnxferError(
                f"{what} index {index} is out of range: this model has {size} {what}s "
                f"(valid indices 0..{size - 1})"
            )
    return out


def parse_layers(spec: Spec, depth: int) -> tuple[int, ...]:
    """Resolve a layer spec to sorted block indices (``None`` means all)."""
    return _parse_items(spec, depth, "layer", _LAYER_HELP)


def parse_heads(spec: Spec, num_heads: int) -> tuple[int, ...]:
    """Resolve a head spec to sorted head indices; an int k means the first k heads."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 1 <= spec <= num_heads:
            raise AttnxferError(
                f"heads={spec} is out of range: this model has {num_heads} heads per layer "
                f"(use a count between 1 and {num_heads})"
            )
        return tuple(range(spec))
    if spec == "all":
        spec = None
    heads = _parse_items(
        spec, num_heads, "head", "use 'all', a count K, a list '0,3,5', 'first:K' or 'last:K'"
    )
    if not heads:
        raise AttnxferError("the head selection is empty: select at least one head")
    return heads


#: ``head_map`` names (a list of teacher head indices is the third kind)
HEAD_MAPS = ("index", "average")
HeadMap = str | Sequence[int] | None


def pair_heads(
    heads: tuple[int, ...], num_student: int, num_teacher: int, head_map: HeadMap = None
) -> tuple[int, ...]:
    """The teacher heads each selected student head receives, flat and in order: ``group``
    consecutive entries per student head of ``heads``, where ``group = len(result) //
    len(heads)``. A student head given several teacher heads takes their average map.

    ``head_map``:

    - ``None`` / ``"index"``: student head ``j`` gets teacher head ``j`` (the paper's pairing,
      which needs the teacher to have head ``j``).
    - ``"average"``: the teacher's heads are split into consecutive groups, one per student head
      (a 16-head teacher for an 8-head student: student head ``j`` gets the average of teacher
      heads ``2j`` and ``2j+1``); with more student heads than teacher heads, each teacher head
      serves consecutive student heads (8 for 16: student heads ``2i`` and ``2i+1`` get teacher
      head ``i``). One count must divide the other.
    - a list (or ``"3,0,5"``): the teacher head for each selected student head, in order.
    """
    if head_map is None or head_map == "index":
        if heads[-1] >= num_teacher:
            raise AttnxferError(
                f"student head {heads[-1]} is selected but the teacher has only {num_teacher} "
                f"heads; student head j is paired with teacher head j, so select heads below "
                f"{num_teacher} (heads={num_teacher}), or map them: head_map='average' or a "
                "list of teacher heads"
            )
        return heads
    if head_map == "average":
        if num_teacher % num_student == 0:
            group = num_teacher // num_student
            return tuple(j * group + i for j in heads for i in range(group))
        if num_student % num_teacher == 0:
            return tuple(j // (num_student // num_teacher) for j in heads)
        raise AttnxferError(
            f"head_map='average' needs one head count to divide the other (teacher "
            f"{num_teacher}, student {num_student}); give a list of teacher heads instead"
        )
    if isinstance(head_map, str):
        try:
            head_map = [int(h) for h in head_map.split(",")]
        except ValueError:
            raise AttnxferError(
                f"head_map={head_map!r} is not 'index', 'average' or teacher head indices"
            ) from None
    chosen = tuple(head_map)
    if len(chosen) != len(heads):
        raise AttnxferError(
            f"head_map lists {len(chosen)} teacher heads for {len(heads)} selected student heads: "
            "give one teacher head per selected student head"
        )
    bad = [h for h in chosen if isinstance(h, bool) or not 0 <= h < num_teacher]
    if bad:
        raise AttnxferError(
            f"head_map names teacher head {bad[0]}, but the teacher has heads 0..{num_teacher - 1}"
        )
    return chosen
