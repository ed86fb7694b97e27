"""A process-wide structure generation, bumped by torch's global registration hooks.

torch calls global registration hooks whenever a submodule or parameter is assigned through
`setattr`/`add_module`/`register_parameter` — which is how torch, transformers and PEFT change
models. Each call bumps the generation; an index built at an older generation re-checks its model
(`ModelIndex.is_current`). The hooks are installed once, when this module is first imported.
"""

from __future__ import annotations

import itertools

from torch import nn

_generation = itertools.count(1)
_current_generation = 0


def current_generation() -> int:
    """The generation now: it changes after any submodule or parameter registration anywhere."""
    return _current_generation


def _bump(*_args):
    global _current_generation
    _current_generation = next(_generation)
    return None  # a registration hook must return None to leave the value unchanged


_hook_handles = (
    nn.modules.module.register_module_module_registration_hook(_bump),
    nn.modules.module.register_module_parameter_registration_hook(_bump),
)
