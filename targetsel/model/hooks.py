"""A process-wide structure generation, bumped by torch's global registration hooks.

torch calls global registration hooks whenever a submodule or parameter is assigned through
`setattr`/`add_module`/`register_parameter` — which is how torch, transformers and PEFT change
models. Each call bumps the generation; an index built at an older generation re-checks its model
(`ModelIndex.is_current`). The hooks are installed once, when this module is first imported.

targetsel's own dry runs build throwaway models (meta skeletons for get_peft_model, one-module
probes); their registrations change no model anyone selected on, and `throwaway_models()` keeps
them from bumping the generation — otherwise every `verify()` or `patch()` would send the next
query on a 60k-module model through the full structure check (a third of a walk).
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager

from torch import nn

_generation = itertools.count(1)
_current_generation = 0


def current_generation() -> int:
    """The generation now: it changes after any submodule or parameter registration anywhere."""
    return _current_generation


_throwaway = threading.local()


@contextmanager
def throwaway_models():
    """Registrations this thread makes inside are into models it just built for itself (copies of a
    model, probes), which no index has seen: they leave the generation alone. Other threads' do not."""
    outer = getattr(_throwaway, "on", False)
    _throwaway.on = True
    try:
        yield
    finally:
        _throwaway.on = outer


def _bump(*_args):
    global _current_generation
    if getattr(_throwaway, "on", False):
        return None
    _current_generation = next(_generation)
    return None  # a registration hook must return None to leave the value unchanged


_hook_handles = (
    nn.modules.module.register_module_module_registration_hook(_bump),
    nn.modules.module.register_module_parameter_registration_hook(_bump),
)
