"""Multi-rank runs: what targetsel prints, it prints once.

Under `torchrun`, FSDP or DeepSpeed every rank runs the same script, so every rank computes the
same selection, config and findings (targetsel is deterministic across processes: nothing depends
on hash seeds, ranks or the local shard). What it *shows* — warnings, tables — is shown by the main
process only: rank 0 of the default group once `torch.distributed` is initialised, otherwise the
one process there is. Warnings are still raised on every rank, so a `-W error` filter (or
`warnings.simplefilter("error")`) fails every rank alike instead of one rank while the others wait
in a collective; only the printing is rank 0's.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Optional, TextIO


def _initialised():
    """`torch.distributed` when a process group is initialised, else None (it is never imported here)."""
    dist = sys.modules.get("torch.distributed")  # a process group exists only if someone imported it
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def rank() -> int:
    """This process's rank in the default group; 0 without torch.distributed."""
    dist = _initialised()
    return 0 if dist is None else dist.get_rank()


def world_size() -> int:
    """Processes in the default group; 1 without torch.distributed."""
    dist = _initialised()
    return 1 if dist is None else dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 of an initialised torch.distributed group, or the only process."""
    return rank() == 0


def print_once(text: Any, file: Optional[TextIO] = None) -> bool:
    """Print `text` on the main process only; True where it was printed."""
    if not is_main_process():
        return False
    print(text, file=file or sys.stdout, flush=True)
    return True


def warn_once(message: Any, category: type = UserWarning, stacklevel: int = 2) -> None:
    """`warnings.warn` on every rank, shown on the main process only.

    On the other ranks the warning goes through the same filters (an "error" filter raises there
    too) but into a recording `catch_warnings`, so nothing is printed."""
    if is_main_process():
        warnings.warn(message, category, stacklevel=stacklevel + 1)
        return
    with warnings.catch_warnings(record=True):
        warnings.warn(message, category, stacklevel=stacklevel + 1)
