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
