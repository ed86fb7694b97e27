"""Layer specs: which numbered blocks `.layers()` / `layers:` keep.

A spec is a union of inclusive ranges `(start, stop)`; `None` is an open end and negative
numbers count from the end of each block container, so `(-4, None)` is "the last four blocks".
Indices are evaluated as 64-bit tensors, so they must fit one: `MAX_LAYER_INDEX` either way.
"""

from __future__ import annotations

import re

from targetsel.errors import LayerSpecError

Range = tuple["int | None", "int | None"]

#: The largest block index (and, negated, the smallest): what a signed 64-bit integer holds.
MAX_LAYER_INDEX = 2**63 - 1

#: The most indices a stepped `range` may list (`range(0, 64, 2)` lists 32).
MAX_STEPPED_INDICES = 10_000

_RANGE_TEXT = re.compile(r"\s*(-?[0-9]+)?\s*(\.\.)?\s*(-?[0-9]+)?\s*")  # ASCII digits, as block numbers in names


def check_ranges(ranges: tuple[Range, ...]) -> tuple[Range, ...]:
    if not ranges:
        raise LayerSpecError("a layer spec needs at least one index or range, e.g. 0..3 or -4..")
    out = []
    for rng in ranges:
        if not (isinstance(rng, (tuple, list)) and len(rng) == 2):
            raise LayerSpecError(f"a layer range is a (start, stop) pair, got {rng!r}")
        start, stop = rng
        for end in (start, stop):
            if end is not None and (isinstance(end, bool) or not isinstance(end, int)):
                raise LayerSpecError(f"layer indices are integers, got {end!r} in {rng!r}")
            if end is not None and abs(end) > MAX_LAYER_INDEX:
                raise _out_of_range(end)
        if start is None and stop is None:
            raise LayerSpecError("the layer range '..' is open at both ends; write 0.. for every block")
        if start is not None and stop is not None and (start < 0) == (stop < 0) and start > stop:
            raise LayerSpecError(f"the layer range {start}..{stop} is empty; write {stop}..{start}")
        out.append((start, stop))
    return tuple(out)


def _out_of_range(number: "str | int") -> LayerSpecError:
    if isinstance(number, int):
        try:
            number = str(number)
        except ValueError:  # past 4300 digits str() refuses
            number = f"{'-' if number < 0 else ''}2**{number.bit_length() - 1}…"
    shown = number if len(number) <= 24 else f"{number[:12]}…({len(number.lstrip('-'))} digits)"
    return LayerSpecError(
        f"layer index {shown} is out of range: block indices lie between -{MAX_LAYER_INDEX} and "
        f"{MAX_LAYER_INDEX}; write A.. for every block from A on, or ..B for every block up to B"
    )


def _int(number: "str | None") -> "int | None":
    if not number:
        return None
    sign, digits = ("-", number[1:]) if number.startswith("-") else ("", number)
    digits = digits.lstrip("0") or "0"
    if len(digits) > 19:  # past 64 bits; and int() refuses more than 4300 digits outright
        raise _out_of_range(sign + digits)
    return int(sign + digits)


def parse_range_text(text: str) -> tuple[Range, ...]:
    """'0..3,8,-4..' → ((0, 3), (8, 8), (-4, None)); raises LayerSpecError naming the bad part."""
    if not isinstance(text, str) or not text.strip():
        raise LayerSpecError(f"empty layer spec {text!r}; write e.g. '0..3', '-4..' or '5'")
    ranges = []
    for part in text.split(","):
        m = _RANGE_TEXT.fullmatch(part)
        if not m or not (m.group(1) or m.group(3)) or (m.group(3) and not m.group(2) and m.group(1)):
            raise LayerSpecError(f"bad layer range {part.strip()!r} in {text!r}; write A..B, A.., ..B or N")
        lo, hi = _int(m.group(1)), _int(m.group(3))
        if m.group(2):
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))
    return check_ranges(tuple(ranges))


def to_ranges(spec, _in_list: bool = False) -> tuple[Range, ...]:
    """An int, range, slice, 'A..B' string, or a list of those, as inclusive ranges."""
    if isinstance(spec, bool):
        raise LayerSpecError(f"a layer spec cannot be a bool, got {spec!r}")
    if isinstance(spec, int):
        return check_ranges(((spec, spec),))
    if isinstance(spec, str):
        return parse_range_text(spec)
    if isinstance(spec, range):
        if not spec:
            raise LayerSpecError(f"{spec!r} is empty")
        if spec.step == 1:
            return check_ranges(((spec.start, spec.stop - 1),))
        check_ranges(((spec[0], spec[0]), (spec[-1], spec[-1])))
        try:
            count = f"{len(spec):,}" if len(spec) > MAX_STEPPED_INDICES else None
        except OverflowError:  # len() stops at sys.maxsize
            count = "more than 2**63"
        if count is not None:
            raise LayerSpecError(
                f"{spec!r} lists {count} blocks, more than the {MAX_STEPPED_INDICES:,} a stepped range may; "
                "models have far fewer blocks: use a range without a step or 'A..B' for a run"
            )
        return check_ranges(tuple((i, i) for i in spec))
    if isinstance(spec, slice):
        if spec.step not in (None, 1):
            raise LayerSpecError(f"slices with a step are not supported ({spec!r}); pass a range or a list")
        start, stop = spec.start, spec.stop
        for end in (start, stop):
            if end is not None and (isinstance(end, bool) or not isinstance(end, int)):
                raise LayerSpecError(f"slice bounds must be integers, got {spec!r}")
        if stop is not None:
            # Python slices exclude the stop; our ranges include it. stop=0 means "nothing" for
            # non-negative starts, and "up to the end" is spelled None, not 0.
            if stop == 0:
                raise LayerSpecError(f"{spec!r} selects no block")
            stop -= 1
        if start is None:
            start = 0 if stop is None or stop >= 0 else None
        return check_ranges(((start, stop),))
    if isinstance(spec, (list, tuple)) and spec:
        if _in_list and any(isinstance(item, (list, tuple)) for item in spec):
            raise LayerSpecError(f"cannot read {spec!r} as a layer spec: a list inside a list inside a list; flatten it")
        return check_ranges(tuple(r for item in spec for r in to_ranges(item, _in_list=True)))
    raise LayerSpecError(
        f"cannot read {spec!r} as a layer spec; use an int, a range, a slice, or a string like '0..3' or '-4..'"
    )


def ranges_text(ranges: tuple[Range, ...]) -> str:
    parts = []
    for start, stop in ranges:
        if start is not None and start == stop:
            parts.append(str(start))
        else:
            parts.append(f"{'' if start is None else start}..{'' if stop is None else stop}")
    return ",".join(parts)
