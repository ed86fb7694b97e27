"""What every trainer export shares: the request, the candidate key sets, and the judge.

A request is built once: `patch()` runs the preflight checks and finds the PEFT-exact targets, the
`rank_pattern` / `alpha_pattern` keys and the `target_parameters` list. A trainer module then
offers candidate key sets in its own vocabulary; each is replayed through the trainer's own
expansion (`expand(keys, model)`, what the trainer hands to `LoraConfig`) and judged by a real
`get_peft_model` (`dry_run`) with the same judgement `patch()` uses. The first exact one wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from torch import nn

from targetsel.errors import ExportError, TargetselError
from targetsel.text.grouping import adapter_differences, short_repr, summarize_names

# A module's `r` / `lora_alpha` when asking patch() for rank / alpha keys: larger than every value
# asked for, so every sub-selection gets a key (the trainer's own default rank is unknown here).
_DEFAULT_RANK = 8


@dataclass(frozen=True)
class Request:
    """What is to be adapted, and what `patch()` found exact under the installed PEFT."""

    trainer: str
    model: nn.Module
    query: str
    names: tuple[str, ...]               # selected modules, model order (target_modules)
    parameter_names: tuple[str, ...]     # selected parameters as PEFT names them (target_parameters)
    all_names: tuple[str, ...]           # every named module (root excluded), as trainers walk them
    peft: Any                            # patch()'s LoraConfig: exact targets, parameters and patterns
    resolution: Any = None               # the module selection, evaluated once (model.resolution.Resolution)
    selection: Any = None
    parameters: Any = None
    ranks: Any = None
    alphas: Any = None
    classes: dict = field(default_factory=dict, compare=False)  # name → module class name

    @property
    def target_parameters(self) -> list[str]:
        return list(getattr(self.peft, "target_parameters", None) or [])

    @property
    def rank_pattern(self) -> dict:
        return dict(getattr(self.peft, "rank_pattern", None) or {}) if self.ranks else {}

    @property
    def alpha_pattern(self) -> dict:
        return dict(getattr(self.peft, "alpha_pattern", None) or {}) if self.alphas else {}

    def patterns(self, prefix: str = "") -> dict:
        """The per-module ranks and alphas asked for, under the trainer's key names (`prefix`+rank_pattern)."""
        found = {"rank_pattern": self.rank_pattern, "alpha_pattern": self.alpha_pattern}
        return {prefix + key: value for key, value in found.items() if value}

    def forms(self) -> list:
        """The exact `target_modules` values for PEFT's own rules: patch()'s pick first, then the
        suffix list, the full-name list and the regex (each as far as it exists), without repeats."""
        if not self.names:
            return [[]]
        from targetsel.views.targets import compile_targets

        out: list = [_plain(self.peft.target_modules)]
        for form in ("suffixes", "list", "regex"):
            try:
                value = compile_targets(self.resolution, form)
            except TargetselError:
                continue
            if value not in out:
                out.append(value)
        return out


def _plain(value):
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def build_request(trainer: str, selection, parameters, ranks, alphas) -> Request:
    """Validate what was asked and let `patch()` prove the PEFT-exact targets and patterns."""
    from peft import LoraConfig

    from targetsel.bridge.patch import patch
    from targetsel.model.resolution import Bound
    from targetsel.views.parameters import ParameterSelection, _parametrized_key

    if isinstance(selection, ParameterSelection):
        if parameters is not None:
            raise ExportError("export() got two parameter selections: pass the module Selection first and the "
                              "ParameterSelection as parameters=, or only the ParameterSelection")
        selection, parameters = None, selection
    if selection is not None and not isinstance(selection, Bound):  # a Selection
        raise ExportError(f"export() needs a targetsel Selection (select(model, QUERY)), got {type(selection).__name__}")
    if parameters is not None and not isinstance(parameters, ParameterSelection):
        raise ExportError(f"export(parameters=...) takes a ParameterSelection (sel.parameters(PATTERN)), "
                          f"got {type(parameters).__name__}")
    if selection is None and parameters is None:
        raise ExportError("export() needs a Selection, a ParameterSelection, or both (selection, parameters=psel)")
    if parameters is not None and selection is not None and parameters.model is not selection.model:
        raise ExportError("export(): the Selection and parameters= are of two different models; select both from one")
    model = (selection if selection is not None else parameters).model
    config = LoraConfig(r=_above(ranks, _DEFAULT_RANK), lora_alpha=_above(alphas, _DEFAULT_RANK))
    names: list[str] = []
    resolution = None
    if selection is not None:
        config = patch(config, selection, ranks=ranks, alphas=alphas)
        resolution = selection.resolution()
        names = list(resolution.names)
    elif ranks or alphas:
        raise ExportError("ranks= and alphas= map sub-selections of modules; pass the module Selection too")
    parameter_names: list[str] = []
    if parameters is not None:
        config = patch(config, parameters)
        parameter_names = [_parametrized_key(n) or n for n in parameters.names()]
    classes = {name: type(module).__name__ for name, module in model.named_modules() if name}
    query = (selection if selection is not None else parameters.selection).query
    return Request(
        trainer=trainer, model=model, query=query, names=tuple(names),
        parameter_names=tuple(parameter_names), all_names=tuple(classes), peft=config, resolution=resolution,
        selection=selection,
        parameters=parameters, ranks=ranks, alphas=alphas, classes=classes,
    )


def _above(mapping, default: int) -> int:
    """An integer larger than every number `mapping` asks for (so none equals the config's default)."""
    given = mapping.values() if isinstance(mapping, dict) else ()  # patch() says what is wrong with a non-dict
    values = [v for v in given if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return int(max(values + [default])) + 1


# ---------------------------------------------------------------------------- names


def dotted_suffixes(name: str) -> list[str]:
    """`a.b.c` → ['c', 'b.c', 'a.b.c']: shortest first, the full name last."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1)]


def suffix_list(request: Request, avoid: Iterable[str] = ()) -> Optional[list[str]]:
    """Per selected module its shortest dotted suffix that no other module's name ends with, never
    one of `avoid` (keys the trainer treats specially); None when some module has no such suffix."""
    chosen = set(request.names)
    blocked = set(avoid)
    for name in request.all_names:
        if name not in chosen:
            blocked.update(dotted_suffixes(name))
    out: dict[str, None] = {}
    for name in request.names:
        pick = next((s for s in dotted_suffixes(name) if s not in blocked), None)
        if pick is None:
            return None
        out.setdefault(pick)
    return list(out)


def list_match(entries: Iterable[str], names: Iterable[str]) -> list[str]:
    """PEFT's list rule: the names equal to an entry or ending with '.' + an entry."""
    keys = set(entries)
    return [n for n in names if any(s in keys for s in dotted_suffixes(n))]


# ---------------------------------------------------------------------------- judging


def judge(request: Request, keys: dict, expansions: Iterable[Callable]) -> Optional[str]:
    """None when every expansion of `keys` makes a real get_peft_model adapt exactly the request;
    otherwise what goes wrong, in one line."""
    from peft import LoraConfig

    from targetsel.bridge.patch import _adapts_exactly
    from targetsel.bridge.verify import dry_run

    for expand in expansions:
        try:
            kwargs = dict(expand(keys, request.model))
        except ExportError as exc:
            return str(exc)
        # PeftModelForCausalLM only adds generation plumbing: matching is the same without it, and
        # models that are not transformers models (the demo) can be judged too.
        if str(getattr(kwargs.get("task_type"), "value", kwargs.get("task_type"))) == "CAUSAL_LM":
            kwargs.pop("task_type")
        try:
            config = LoraConfig(**kwargs)
        except (TypeError, ValueError) as exc:
            return f"peft's LoraConfig rejects what {request.trainer} builds from these keys: {exc}"
        outcome = dry_run(request.model, config)
        if outcome.error is not None:
            return f"get_peft_model would raise {outcome.error.splitlines()[0]}"
        exact = (_adapts_exactly(config, outcome, list(request.names))
                 and tuple(outcome.parameters) == request.parameter_names
                 and not _extra_saved(config, outcome) and not outcome.tokens)
        if not exact:
            return _difference(request, outcome, _extra_saved(config, outcome))
    return None


def _extra_saved(config, outcome) -> list[str]:
    """Modules wrapped for full training that the task type does not add on its own (a SEQ_CLS head is fine)."""
    from targetsel.bridge.verify import task_modules_to_save

    defaults = tuple(task_modules_to_save(config))
    return [n for n in outcome.saved if not (defaults and (n in defaults or n.endswith(tuple("." + d for d in defaults))))]


def _difference(request: Request, outcome, saved=()) -> str:
    parts = [*adapter_differences(request.names, outcome.modules, "module"),
             *adapter_differences(request.parameter_names, outcome.parameters, "parameter")]
    if saved:
        parts.append(f"{summarize_names(list(saved), limit=3)} would be trained in full (modules_to_save)")
    if outcome.tokens:
        parts.append(f"{summarize_names(list(outcome.tokens), limit=3)} would get trainable-token layers")
    if not parts and outcome.reloads is False:
        parts.append("the saved adapter would not reload onto the same modules")
    return "; ".join(parts) or "PEFT would not keep the config's intent (see targetsel.dry_run)"


def first_exact(request: Request, candidates: Iterable[dict], expansions: Iterable[Callable]):
    """The first candidate every expansion adapts exactly, and the (keys, why) of those that failed."""
    failed: list[tuple[dict, str]] = []
    expansions = tuple(expansions)
    for keys in candidates:
        why = judge(request, keys, expansions)
        if why is None:
            return keys, failed
        failed.append((keys, why))
    return None, failed


def superset_hint(request: Request) -> str:
    """Where a list of full names over-matches: the larger selection such a list does express."""
    extra = [n for n in list_match(request.names, request.all_names) if n not in set(request.names)]
    if not extra:
        return ""
    return (f"select also the {len(extra)} module(s) whose names end with a selected name "
            f"({summarize_names(extra, limit=3)}), which a list expresses exactly; or ")


def refuse(request: Request, why: str, alternative: str) -> ExportError:
    """The error for a selection the trainer cannot express: what, why, and the closest exact alternative."""
    what = f"{len(request.names)} module(s)" + (f" and {len(request.parameter_names)} parameter(s)"
                                                 if request.parameter_names else "")
    return ExportError(
        f"{request.trainer} cannot adapt exactly the {what} of {request.query!r} on "
        f"{type(request.model).__name__}: {why}. Closest exact alternative: {alternative}"
    )


def shown(keys: dict) -> str:
    return ", ".join(f"{k}={short_repr(v, 80)}" for k, v in keys.items())
