"""Numbered blocks: which container and block index every module of an index sits in.

A block container is a ModuleList, Sequential or ModuleDict, or any module whose children are all
named by integers. A module's block index is the first integer segment after such a container on
its path, so in `layers.3.mlp.experts.7.up_proj` it is 3, not 7.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from targetsel.model.arrays import long_tensor
from targetsel.model.threads import single_threaded


class Blocks(NamedTuple):
    """Per module position: container position, block index, container length; -1 outside any block."""

    container: torch.Tensor
    index: torch.Tensor
    length: torch.Tensor


def is_number(segment: str) -> bool:
    """A block number: ASCII digits only, as PEFT's layer regexes and `int()` agree on (`'¹'.isdigit()`
    is True but `int('¹')` raises; `'٣'` would make `layers.٣` block 3 beside `layers.3`)."""
    return segment.isascii() and segment.isdigit()


@single_threaded
def find_blocks(index) -> Blocks:
    """The blocks of `index` (a `ModelIndex`)."""
    n = index.size
    lengths = _container_lengths(index)
    container_t = torch.full((n,), -1, dtype=torch.long)
    index_t = torch.full((n,), -1, dtype=torch.long)
    length_t = torch.full((n,), -1, dtype=torch.long)
    if lengths:
        names, parents, ends = index.names, index.parents, index.ends
        parents_t = long_tensor(parents)[1:]
        candidates = (torch.isin(parents_t, torch.tensor(list(lengths), dtype=torch.long)).nonzero().flatten() + 1).tolist()
        # The outermost numbered block wins (layers.3.mlp.experts.7 is in block 3): in preorder, a
        # block root inside the previous one's subtree is skipped, so a slice per outer block suffices.
        covered_until = -1
        for i in candidates:
            if i < covered_until:
                continue
            seg = names[i][names[i].rfind(".") + 1 :]
            if not is_number(seg):
                continue
            p = parents[i]
            container_t[i : ends[i]] = p
            index_t[i : ends[i]] = int(seg)
            length_t[i : ends[i]] = lengths[p]
            covered_until = ends[i]
    return Blocks(container_t, index_t, length_t)


def _container_lengths(index) -> dict[int, int]:
    """Block container position → its number of numbered children."""
    lengths: dict[int, int] = {}
    list_types = (nn.ModuleList, nn.Sequential, nn.ModuleDict)
    modules = index.modules
    for i in (~index.leaf_mask()).nonzero().flatten().tolist():  # modules with children, not all 60k
        m = modules[i]
        if isinstance(m, list_types):
            digits = sum(1 for k, v in m._modules.items() if v is not None and is_number(k))
        elif is_number(next(iter(m._modules))):  # other modules count only when every child is numbered
            keys = [k for k, v in m._modules.items() if v is not None]
            digits = len(keys) if all(is_number(k) for k in keys) else 0
        else:
            continue
        if digits:
            lengths[i] = digits
    return lengths
