"""PEFT on wrapped models: what it reports, named as on the plain model (model/wrappers.py says why).

A real injection into a skeleton of an FSDP1- or checkpoint-wrapped model names what PEFT adapted
as the wrapped model does (`layers.0._fsdp_wrapped_module.self_attn.q_proj`); a `PeftModel` wrapped
after `get_peft_model` names its layers so too. targetsel answers with the plain model's names
everywhere, so both are mapped back here.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from targetsel.bridge.injection import Injection
from targetsel.model.wrappers import peft_view, unwrapped, user_name


def user_named(result: Injection, index) -> Injection:
    """`result` with every module and parameter name as on the plain model (itself for unwrapped models)."""
    if peft_view(index) is None:
        return result

    def plain(names) -> tuple[str, ...]:
        return tuple(user_name(n) for n in names)

    # The reload check saves and reloads through state_dict(), which FSDP1's own hooks rewrite on the
    # wrapped skeleton: it says nothing about the adapter the plain model saves, so it is not reported.
    return dataclasses.replace(result, modules=plain(result.modules), parameters=plain(result.parameters),
                               saved=plain(result.saved), tokens=plain(result.tokens), mirrors=plain(result.mirrors),
                               reloads=None)


def inner_model(model: nn.Module) -> nn.Module:
    """The model inside FSDP1 / checkpoint wrappers put around it after get_peft_model (the PeftModel)."""
    return unwrapped(model)
