"""Python lists to 1-d tensors, fast: the index's arrays hold one entry per module, parameter or registration.

`torch.tensor(list)` inspects every element (12 ms for 63k bools on the benchmark machine); a
buffer of machine integers is filled in C at a few ns an element and shared by the tensor.
"""

from __future__ import annotations

import array

import torch


def long_tensor(values) -> torch.Tensor:
    """A 1-d int64 tensor of `values` (an iterable of ints)."""
    buffer = array.array("q", values)
    return torch.frombuffer(buffer, dtype=torch.long) if buffer else torch.zeros(0, dtype=torch.long)


def bool_tensor(values) -> torch.Tensor:
    """A 1-d bool tensor of `values` (an iterable of bools)."""
    buffer = bytearray(values)
    return torch.frombuffer(buffer, dtype=torch.bool) if buffer else torch.zeros(0, dtype=torch.bool)
