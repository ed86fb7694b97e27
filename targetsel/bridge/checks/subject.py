"""What `check()` looks at: one shape for a selection and for a PEFT config.

Either way the subject is the positions PEFT would target and the config whose method applies.
A selection brings its `Resolution` (the selector, for the rules that read it); a config brings its
dry run's `outcome` (what get_peft_model does with it). Where the two differ — how a fix is
phrased, which modules PEFT would match apart from `modules_to_save` — the subject answers, so the
rules do not branch on where the targets came from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from torch import nn

from targetsel.bridge.probe import Probe, probe
from targetsel.errors import ModelMismatchError, TargetselError
from targetsel.model.index import ModelIndex
from targetsel.model.resolution import Resolution
from targetsel.text.grouping import summarize_names

# A subject's state: which rules look at it.
SELECTED = "selected"  # something is targeted
EMPTY = "empty"  # nothing is
REJECTED = "rejected"  # nothing is, because get_peft_model raises on the config before matching anything

_METHOD_NAMES = {"Lora": "LoRA", "AdaLora": "AdaLoRA", "Vera": "VeRA", "Loha": "LoHa", "Lokr": "LoKr"}


@dataclass
class Subject:
    """The checked set and everything the rules read, computed once."""

    model: nn.Module
    index: ModelIndex
    positions: list[int]  # what PEFT would target, model order
    config: Any  # the PEFT config whose method semantics apply
    resolution: Optional[Resolution] = None  # the target was a selection (or a query)
    outcome: Any = None  # the target was a PEFT config: what get_peft_model does with it (verify.dry_run)

    @property
    def from_config(self) -> bool:
        return self.resolution is None

    @property
    def state(self) -> str:
        if self.positions:
            return SELECTED
        rejected = self.outcome is not None and self.outcome.error is not None
        return REJECTED if rejected and "NoMatchingPeftModuleError" not in self.outcome.error else EMPTY

    def fix(self, selection: str, config: str) -> str:
        """The advice that fits the target: how to change the selection, or the config's fields."""
        return config if self.from_config else selection

    @functools.cached_property
    def names(self) -> list[str]:
        return [self.index.names[i] for i in self.positions]

    @functools.cached_property
    def grad(self):
        return self.index.grad_counts()

    @property
    def method(self) -> str:
        name = type(self.config).__name__.removesuffix("Config")
        return _METHOD_NAMES.get(name, name)

    def grouped(self, names: Sequence[str], limit: int = 6) -> str:
        return summarize_names(list(names), limit=limit)

    @functools.cached_property
    def probes(self) -> dict[type, Probe]:
        """PEFT's answer for each distinct class among the targets (probed on its first module)."""
        found: dict[type, Probe] = {}
        modules = self.index.modules
        for i in self.positions:
            cls = type(modules[i])
            if cls not in found:
                found[cls] = probe(modules[i], self.config, self.model)
        return found

    @functools.cached_property
    def unwrappable(self) -> list[int]:
        """Targets whose class the method cannot wrap, as PEFT's dispatch says."""
        modules, probes = self.index.modules, self.probes
        found = [i for i in self.positions if not probes[type(modules[i])].supported]
        if found and not self.from_config:
            # A config's outcome already went through PEFT's MoE conversion; a selection's names have
            # not: targets it turns into target_parameters (a router's `gate`) never reach the
            # dispatch, and patch() says what PEFT does with them instead.
            from targetsel.bridge.verify import converted_names

            converted = converted_names(self.model, [self.index.names[i] for i in found])
            found = [i for i in found if self.index.names[i] not in converted]
        return found

    @functools.cached_property
    def matched_apart_from_modules_to_save(self) -> list[int]:
        """What PEFT's matcher would pick if `modules_to_save` skipped nothing."""
        if not self.from_config:
            return self.positions
        from targetsel.bridge.match_fields import without
        from targetsel.bridge.verify import name_matches

        return name_matches(self.model, without(self.config, ("modules_to_save",)))


def subject_of(res: Resolution, config: Any = None) -> Subject:
    """The subject for a resolved selection, under `config` (LoRA's defaults without one)."""
    return Subject(res.model, res.index, res.positions, _method_config(config), resolution=res)


def _method_config(config: Any) -> Any:
    from peft import LoraConfig

    from targetsel.bridge.verify import require_peft_config

    if config is None:
        return LoraConfig()
    require_peft_config(config, "check(..., config=...)")
    return config


def subject_for(model: nn.Module, target, config: Any) -> Subject:
    """`check(model, target, config=...)`'s subject: target is a Selection, a query or a PEFT config."""
    from peft import PeftConfig

    from targetsel.bridge.verify import dry_run, name_matches, require_peft_config
    from targetsel.model.index import get_index
    from targetsel.model.resolution import Bound, bind
    from targetsel.query import nodes as N

    index = get_index(model)  # NotAModuleError for anything but an nn.Module
    if isinstance(target, PeftConfig):
        if config is not None and config is not target:
            raise TargetselError(
                "check(model, config): the target is already a PEFT config; pass it once, without config=..."
            )
        require_peft_config(target, "check()")
        outcome = dry_run(model, target)
        if outcome.error is None:  # what PEFT adapts
            wanted = set(outcome.modules)
            positions = [i for i, n in enumerate(index.names) if i and n in wanted]
        else:  # what PEFT's matcher picks before it raises, so the rules can name the modules at fault
            positions = name_matches(model, target)
        return Subject(model, index, positions, target, outcome=outcome)
    config = _method_config(config)
    if isinstance(target, Bound):  # a Selection
        if target.model is not model:
            raise ModelMismatchError(
                f"check(model, selection): the selection belongs to another model ({type(target.model).__name__} "
                f"at {id(target.model):#x}, not {type(model).__name__} at {id(model):#x}); select from the model you check"
            )
        selection = target
    elif isinstance(target, (str, N.Selector)):
        selection = bind(model, target)
    else:
        raise TargetselError(
            f"check(model, target): target must be a Selection, a query string or a PEFT config, "
            f"got {type(target).__name__}"
        )
    res = _resolution_of(selection)
    return Subject(model, res.index, res.positions, config, resolution=res)


def _resolution_of(selection) -> Resolution:
    """What a selection means now (the one place this package asks a Selection)."""
    return selection.resolution()
