"""`patch(config, selection)`: a new PEFT config that targets exactly the selection."""

from __future__ import annotations

from typing import Any

from targetsel.bridge.match_fields import set_fields, without
from targetsel.bridge.value_patterns import value_patterns
from targetsel.errors import ConfigError, PeftRejectionError, SelectionError, TargetselError
from targetsel.model.resolution import Bound, Resolution
from targetsel.text.grouping import short_repr


def _new_config(config: Any, **changes):
    return without(config, (), **changes)


def _resolution_of(selection) -> Resolution:
    """What a selection means now (the one place this module asks a Selection)."""
    return selection.resolution()


def patch(config: Any, selection, *, form: str = "auto", strict: bool = True, ranks=None, alphas=None):
    """A new config of the same class whose `target_modules` make PEFT target exactly `selection`.

    The input config is never changed. Runs the preflight `targetsel.check()` first: errors
    (empty selection, nested targets, types the method cannot wrap, `modules_to_save` overlap, …)
    raise a `PreflightError` subclass listing the findings, and warnings are emitted once each as
    `TargetselWarning`. `strict=False` turns the errors PEFT would survive (modules-to-save-overlap:
    PEFT skips those modules) into warnings. Raises `ConfigError` when another field of the config
    (exclude_modules, layers_to_transform, …) would change the set PEFT targets.

    `selection` may also be a `ParameterSelection` (`sel.parameters("gate_up_proj")`): then
    `target_parameters` is filled instead, and `target_modules` kept (or set to `[]`, so PEFT's
    per-architecture default targets do not sneak in).

    `ranks` / `alphas` map sub-selections (a `Selection` of the same model, or a query string) to a
    rank / alpha; they compile to `rank_pattern` / `alpha_pattern` keys that PEFT's own lookup
    (`peft.utils.other.get_pattern_key`) resolves to exactly the intended value for every module.
    """
    # One piece on purpose: the order of validation, warnings and the form loop is the contract (nothing
    # is emitted or built before every input is checked), and it reads best top to bottom.
    from targetsel.views.parameters import ParameterSelection
    from targetsel.bridge.verify import dry_run, require_peft_config

    require_peft_config(config)
    if isinstance(selection, ParameterSelection):
        if ranks or alphas:
            raise ConfigError("ranks= and alphas= apply to module selections; patch the modules first, then the parameters")
        return _patch_parameters(config, selection)
    if not isinstance(selection, Bound):  # a Selection
        raise TargetselError(
            f"patch(config, selection) needs a targetsel Selection, got {type(selection).__name__}; "
            "build one with targetsel.select(model, ...)"
        )
    from targetsel.bridge.checks import check_resolution, enforce

    # Validate everything that can fail on bad input before emitting warnings or building anything.
    res = _resolution_of(selection)  # evaluated once: the names, the checks and every form read it
    patterns = {}
    names = res.names
    for field, base_field, mapping in (("rank_pattern", "r", ranks), ("alpha_pattern", "lora_alpha", alphas)):
        if mapping:
            patterns[field] = value_patterns(config, res, names, field, base_field, mapping)
    if getattr(config, "layer_replication", None):
        raise ConfigError(
            f"{type(config).__name__} carries layer_replication={config.layer_replication!r}: PEFT rebuilds the layer "
            "stack before matching, so a layer's name no longer means the module you selected (layers.0 may be a copy "
            "of layer 1). Apply the replication first (peft.tuners.tuners_utils.replicate_layers on the model), select "
            "on the replicated model, and patch a config without layer_replication."
        )
    # Empty selections and nested targets are findings too: they raise EmptySelectionError / NestedTargetsError.
    downgraded = enforce(check_resolution(res, config), strict=strict, stacklevel=3)
    skipped = {n for f in downgraded if f.code == "modules-to-save-overlap" for n in f.modules}
    expected = [n for n in names if n not in skipped]
    # "auto" tries the shortest exact form first, then the others: PEFT may rewrite targets before
    # matching (its transformers-5 MoE conversion turns a regex into bare leaf names) or refuse a
    # form with another field (a regex beside layers_to_transform), and a form that survives is
    # still exact. An explicit form is taken as asked, or refused.
    forms = _Forms(res)
    tried: list[tuple[Any, Any]] = []  # (value, Injection or the ConfigError building the config raised)
    new = None
    for value in forms.tries(form):
        if any(value == v for v, _ in tried):
            continue
        changes = dict(patterns)
        if getattr(config, "feedforward_modules", None):  # IA³: which targets scale inputs, kept exact too
            value, changes["feedforward_modules"] = _feedforward(config, forms, names, value)
        try:
            candidate_config = _new_config(config, target_modules=value, **changes)
        except ConfigError as exc:
            tried.append((value, exc))
            continue
        outcome = dry_run(res.model, candidate_config)
        if _adapts_exactly(config, outcome, expected):
            new = candidate_config
            break
        tried.append((value, outcome))
    if new is None:
        _raise_no_exact_form(config, res, names, tried)
    from targetsel.model.resolution import remember

    remember(selection.model, selection.memory_key, names)  # so audit() can compare after get_peft_model has rewritten the tree
    return new


def _adapts_exactly(config: Any, outcome, expected: list[str]) -> bool:
    """PEFT adapts exactly `expected` with this outcome, keeps the config's intent, and reloads."""
    if outcome.error is not None or outcome.reloads is False or _new_parameters(config, outcome):
        return False
    if any(_TYING_SIDESTEPPED in w for w in outcome.warnings):
        return False  # the form sidesteps the tying the config asks for (PEFT only warns)
    if str(getattr(config.peft_type, "value", config.peft_type)) == "TRAINABLE_TOKENS":
        mirrors = set(outcome.mirrors)  # a tied lm_head follows its embedding; it is not a target
        return [n for n in outcome.tokens if n not in mirrors] == expected and not outcome.modules
    return list(outcome.modules) == expected


# PEFT's warning when ensure_weight_tying=True finds no tied module among the targets (tuners_utils.py).
_TYING_SIDESTEPPED = "You have requested `ensure_weight_tying`, but no tied modules are added"


def _new_parameters(config: Any, outcome) -> bool:
    """Did PEFT adapt parameters the config did not ask for (targets moved by its MoE conversion)?"""
    asked = set(getattr(config, "target_parameters", None) or ())
    return any(not any(p == a or p.endswith("." + a) for a in asked) for p in outcome.parameters)


def _raise_no_exact_form(config, res: Resolution, names: list[str], tried: list) -> None:
    """No form is exact: say why, naming the config field, PEFT's rewriting or PEFT's own error."""
    from targetsel.bridge.injection import Injection
    from targetsel.bridge.checks.peft_rules import advice_for_peft_error

    outcomes = [(v, o) for v, o in tried if isinstance(o, Injection)]
    if not outcomes:
        raise tried[0][1] if tried else ConfigError("no target form could be compiled for this selection")
    value, outcome = outcomes[0]
    if all(o.error is not None for _, o in outcomes) and "NoMatchingPeftModuleError" in outcome.error:
        # Nothing left to adapt: a field of the config may have removed every target (older PEFT
        # versions keep none under some layers_to_transform); name it when clearing it helps.
        _raise_mismatch(config, res, value, names, [], outcome, only_culprits=True)
    if all(o.error is not None for _, o in outcomes):
        raise PeftRejectionError(
            f"get_peft_model would raise on every target form targetsel can write for this selection of "
            f"{type(res.model).__name__} (e.g. target_modules={short_repr(value)}): {outcome.error.rstrip('.')}. "
            + advice_for_peft_error(outcome.error, selection=True),
            outcome.error,
        )
    value, outcome = next((v, o) for v, o in outcomes if o.error is None)
    _raise_mismatch(config, res, value, names, list(outcome.modules), outcome)


class _Forms:
    """The exact `target_modules` values of one resolution, each form compiled at most once."""

    KINDS = ("list", "suffixes", "regex")

    def __init__(self, res: Resolution):
        self.res = res
        self._values: dict[str, Any] = {}

    def get(self, kind: str):
        """The exact value of this form, or None when the form cannot be exact here."""
        from targetsel.views.targets import candidate_forms

        if kind not in self._values:
            try:
                self._values[kind] = candidate_forms(self.res, kind)[0]
            except SelectionError:
                self._values[kind] = None
        return self._values[kind]

    def tries(self, form: str):
        """The values patch() tries, in order: for "auto" the shortest first, then each exact form.

        The list form's size is known unchecked; checking it is exact (PEFT's suffix rule over every
        name) is the slowest step, so it runs only when the list could be shortest or a try failed."""
        from targetsel.views.targets import shortest, size

        if form != "auto":
            value = self.get(form)
            yield from ([] if value is None else [value])
            return
        rest = [v for v in map(self.get, self.KINDS[1:]) if v is not None]
        if rest and size(self.res.names) > size(shortest(rest)):
            yield shortest(rest)
        exact = [v for v in map(self.get, self.KINDS) if v is not None]
        if exact:
            yield shortest(exact)
            yield from exact

    def kept_by_peft(self, kind: str):
        """The value of this form, or `ConfigError` when PEFT rewrites it on this model (`to_peft(kind)`)."""
        from targetsel.bridge.forms import kept_by_peft

        return kept_by_peft(self.res, [self.get(kind)], kind)[0]


def _is_feedforward(feedforward, name: str) -> bool:
    """IA³'s own rule (`IA3Model._check_target_module_feedforward`): str → fullmatch, list → endswith (no dot)."""
    from peft.tuners.ia3 import IA3Model

    probe = type("FF", (), {"feedforward_modules": feedforward})()
    return IA3Model._check_target_module_feedforward(probe, name)


def _feedforward(config, forms: _Forms, names: list[str], value):
    """(target_modules, feedforward_modules) such that IA³ marks exactly the same selected modules
    feedforward as the config's own `feedforward_modules` does, and PEFT's subset check holds."""
    from targetsel.text.names_regex import names_regex

    wanted = [n for n in names if _is_feedforward(config.feedforward_modules, n)]
    if not wanted:
        raise ConfigError(
            f"{type(config).__name__}.feedforward_modules={config.feedforward_modules!r} names none of the "
            f"{len(names)} selected modules; IA³ needs its feedforward layers among the targets: select them too, "
            "or set feedforward_modules to the selected feedforward layers"
        )
    chosen = set(wanted)
    if not isinstance(value, str):
        # A list of targets: PEFT requires feedforward_modules ⊆ target_modules, so both are full names.
        full = forms.kept_by_peft("list") if forms.get("list") is not None else None
        if full is not None and all(_is_feedforward(wanted, n) == (n in chosen) for n in names):
            return full, list(wanted)
    pattern = "^" + names_regex(wanted) + "$"
    return (value if isinstance(value, str) else forms.kept_by_peft("regex")), pattern


def _patch_parameters(config: Any, psel):
    """A config whose `target_parameters` make PEFT adapt exactly `psel`; the modules it already
    targets must stay as they are (PEFT raises when a parameter's module is itself a target)."""
    from targetsel.bridge.verify import dry_run

    names = psel.names()
    value = psel.to_peft()
    if not hasattr(config, "target_parameters"):
        raise ConfigError(f"{type(config).__name__} has no target_parameters field; the installed peft's LoraConfig has")
    changes = {"target_parameters": value}
    if getattr(config, "target_modules", None) is None:
        changes["target_modules"] = []  # None would let PEFT fill in its per-architecture defaults
    new = _new_config(config, **changes)
    before = dry_run(psel.model, config) if config.target_modules else None  # the module targets to keep
    if before is not None and before.error is not None:
        before = None
    outcome = dry_run(psel.model, new, real=True)
    if outcome.error is not None:
        raise PeftRejectionError(
            f"get_peft_model would raise with target_parameters={short_repr(value)} on this {type(config).__name__}: "
            f"{outcome.error.rstrip('.')}. " + _fix_for_parameter_error(outcome.error),
            outcome.error,
        )
    from targetsel.views.parameters import _parametrized_key

    names = [_parametrized_key(n) or n for n in names]  # PEFT names a parametrized tensor by its module's key
    if list(outcome.parameters) != names or (before is not None and outcome.modules != before.modules):
        from targetsel.text.grouping import summarize_names

        got, want = set(outcome.parameters), set(names)
        lost = [n for n in names if n not in got]
        extra = [n for n in outcome.parameters if n not in want]
        detail = _mismatch_detail(lost, extra)
        if not detail:  # the parameters are right, but the module targets changed
            detail = [f"the modules adapted change from {summarize_names(list(before.modules), limit=3)} "
                      f"to {summarize_names(list(outcome.modules), limit=3)}"]
        raise ConfigError(
            f"PEFT does not adapt exactly the {len(names)} selected parameter(s) with target_parameters={short_repr(value)}: "
            + "; ".join(detail).replace("module(s)", "parameter(s)")
            + ". PEFT matches target_parameters on module names with '.base_layer' removed, and parametrized modules "
            "by exact name only; select other parameters, or rename the modules."
        )
    return new


def _fix_for_parameter_error(error: str) -> str:
    if "not a valid target" in error or "also targeted with `target_modules`" in error:
        return ("A parameter of a module that target_modules also adapts cannot be targeted too: drop that module "
                "from the module selection, or its parameters from the parameter selection.")
    if "top-level module" in error:
        return "Parameters registered directly on the model itself cannot be targeted; select parameters of submodules."
    return "Change the parameter selection or the config so that PEFT accepts it."


def _raise_mismatch(config, res: Resolution, value, names: list[str], got: list[str], outcome=None,
                    only_culprits: bool = False) -> None:
    from targetsel.bridge.verify import dry_run

    wanted, seen = set(names), set(got)
    lost = [n for n in names if n not in seen]
    extra = [n for n in got if n not in wanted]
    culprits = []
    for present in set_fields(config):
        try:
            cleared = without(config, present, target_modules=value)
        except ConfigError:
            continue
        again = dry_run(res.model, cleared)
        failed_before = outcome is not None and outcome.error is not None
        if (again.error is not None) != failed_before or (again.error is None and list(again.modules) != got):
            culprits.extend(present)  # clearing the field changes what PEFT does
    if not culprits and only_culprits:
        return
    if not culprits:
        _raise_if_peft_rewrites(config, res, value, lost, extra)
    fields = ", ".join(f"{f}={getattr(config, f)!r}" for f in culprits) or "a field of the config"
    detail = _mismatch_detail(lost, extra)
    raise ConfigError(
        f"{type(config).__name__} carries {fields}, which changes what PEFT targets: "
        + "; ".join(detail)
        + ". Remove the field (express it in the selection instead, e.g. - under:NAME) and patch again."
    )


def _mismatch_detail(lost: list[str], extra: list[str]) -> list[str]:
    from targetsel.text.grouping import summarize_names

    detail = []
    if lost:
        detail.append(f"{len(lost)} selected module(s) would not be targeted: {summarize_names(lost, limit=4)}")
    if extra:
        detail.append(f"{len(extra)} unselected module(s) would be targeted: {summarize_names(extra, limit=4)}")
    return detail


def _raise_if_peft_rewrites(config, res: Resolution, value, lost: list[str], extra: list[str]) -> None:
    """PEFT rewrites the targets itself before matching (transformers-5 MoE conversion): say so."""
    from targetsel.bridge.verify import prepare_config

    try:
        prepared = prepare_config(res.model, _new_config(config, target_modules=value))
    except Exception:  # the explanation is best effort; the caller raises in any case
        return
    after = prepared.target_modules
    before = value if isinstance(value, str) else set(value)
    if after == before or (not isinstance(after, str) and not isinstance(before, str) and set(after) == set(before)):
        return
    model_type = getattr(getattr(res.model, "config", None), "model_type", "?")
    shown = after if isinstance(after, str) else sorted(after)[:6]
    params = sorted(getattr(prepared, "target_parameters", None) or [])
    detail = _mismatch_detail(lost, extra)
    raise ConfigError(
        f"the installed peft rewrites target_modules for {model_type!r} models before matching (its transformers-5 "
        f"MoE conversion): every exact form targetsel can write becomes {shown!r}"
        + (f" plus target_parameters {params!r}" if params else "")
        + ", so " + "; ".join(detail) + ". PEFT cannot adapt exactly this selection on this model; leave those "
        "modules out (or target fused experts with .parameters())."
    )
