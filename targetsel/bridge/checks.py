"""Preflight checks: what PEFT would do wrong, silently, with a selection or a config — said before `get_peft_model`.

Both incidents behind targetsel were silent. PEFT matches by name, so it put adapters on a vision
tower the user had frozen; and it wraps any `nn.Linear` subclass as a plain Linear, so
InternLM-XComposer2's PLoRA layers (their own `Plora_A`/`Plora_B` children, `forward(x, im_mask)`)
lost their own training. `check(model, target)` looks at what would be targeted and returns
`Finding`s with a stable `code`, a `severity` and a message that says what happened, how many,
and what to do instead. `patch()` runs it: errors raise, warnings are emitted once each.

What a PEFT method can wrap is asked from PEFT itself: each selected class is injected, on a
meta-device copy of one of its modules, with PEFT's own `inject_adapter_in_model` — the model is
never touched — so the answer is the installed PEFT's dispatch, quantized backends and custom
module mappings included.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from targetsel.errors import (
    EmptySelectionError,
    ModulesToSaveOverlapError,
    NestedTargetsError,
    PreflightError,
    TargetselError,
    TargetselWarning,
)
from targetsel.text.grouping import summarize_names

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class CodeInfo:
    severity: str
    peft_fails: bool  # True: PEFT raises or crashes, so `strict=False` cannot downgrade it
    summary: str


# Every code, in report order. The spellings are part of the API.
CODES: dict[str, CodeInfo] = {
    "empty-selection": CodeInfo("error", True, "nothing is selected; names the clause that emptied it and the nearest misses"),
    "nested-targets": CodeInfo("error", True, "a module and one of its descendants are both selected (PEFT crashes mid-injection)"),
    "container-target": CodeInfo("error", True, "a selected module with children that the PEFT method cannot wrap (a whole block)"),
    "unsupported-type": CodeInfo("error", True, "a selected layer type the PEFT method cannot wrap, as PEFT's own dispatch says"),
    "modules-to-save-overlap": CodeInfo("error", False, "selected modules that `modules_to_save` also names; PEFT skips them silently"),
    "frozen-target": CodeInfo("warning", False, "selected modules whose parameters are all frozen; PEFT adapts them anyway"),
    "subclass-target": CodeInfo("warning", False, "a subclass of a layer PEFT wraps, with its own children/parameters/forward; PEFT wraps it as its base class"),
    "output-head": CodeInfo("warning", False, "the output head, or a module holding an embedding's weight (tied), is selected"),
    "adapter-name-clash": CodeInfo("warning", False, "base-model names containing the method's adapter prefix (`lora_`), which PEFT matches by name in places"),
    "shared-module": CodeInfo("warning", False, "a selected module registered under several names; PEFT wraps it under the first one only"),
    "all-frozen": CodeInfo("info", False, "`trainable` on a model whose parameters are all frozen: select before freezing"),
}


def _merge_peft_codes() -> None:
    """The codes of the rules that judge a config by a dry run of PEFT (peft_rules.py), errors with errors."""
    from targetsel.bridge.peft_rules import CODES as PEFT_CODES

    merged: dict[str, CodeInfo] = {}
    for severity in SEVERITIES:
        merged.update({c: i for c, i in CODES.items() if i.severity == severity})
        merged.update({c: CodeInfo(*info) for c, info in PEFT_CODES.items() if info[0] == severity})
    CODES.clear()
    CODES.update(merged)


_merge_peft_codes()

_ORDER = {code: i for i, code in enumerate(CODES)}
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# The classes patch() raises, by the code of its first error; anything else is a PreflightError.
_ERROR_CLASSES = {
    "empty-selection": EmptySelectionError,
    "nested-targets": NestedTargetsError,
    "modules-to-save-overlap": ModulesToSaveOverlapError,
    "modules-to-save-wraps": ModulesToSaveOverlapError,
}

# The name the probe gives the module under test inside its one-module model.
_PROBE = "targetsel_probe"


@dataclass(frozen=True)
class Finding:
    """One preflight finding. `modules` are module names in model order."""

    code: str
    severity: str
    message: str
    modules: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.severity} [{self.code}] {self.message}"

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "modules": list(self.modules)}


# ---------------------------------------------------------------------------- what is checked


@dataclass
class _Subject:
    """The checked set and everything the rules read, computed once."""

    model: nn.Module
    index: Any
    positions: list[int]  # selected positions, model order
    config: Any  # the PEFT config whose method semantics apply
    selection: Any = None  # the Selection, when the target was one (or a query)
    from_config: bool = False  # the target was a PEFT config
    outcome: Any = None  # for a config: what get_peft_model does with it (verify.dry_run)

    @functools.cached_property
    def names(self) -> list[str]:
        return [self.index.names[i] for i in self.positions]

    @functools.cached_property
    def grad(self):
        return self.index.grad_counts()

    @property
    def method(self) -> str:
        name = type(self.config).__name__.removesuffix("Config")
        return {"Lora": "LoRA", "AdaLora": "AdaLoRA", "Vera": "VeRA", "Loha": "LoHa", "Lokr": "LoKr"}.get(name, name)

    def grouped(self, names: Sequence[str], limit: int = 6) -> str:
        return summarize_names(list(names), limit=limit)


def _resolve(model, target, config) -> _Subject:
    from peft import LoraConfig, PeftConfig

    from targetsel.query import nodes as N
    from targetsel.errors import ModelMismatchError
    from targetsel.model.index import get_index
    from targetsel.selection import Selection, select
    from targetsel.bridge.verify import dry_run, name_matches, require_peft_config

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
        return _Subject(model, index, positions, target, from_config=True, outcome=outcome)
    if config is None:
        config = LoraConfig()
    else:
        require_peft_config(config, "check(..., config=...)")
    if isinstance(target, Selection):
        if target.model is not model:
            raise ModelMismatchError(
                f"check(model, selection): the selection belongs to another model ({type(target.model).__name__} "
                f"at {id(target.model):#x}, not {type(model).__name__} at {id(model):#x}); select from the model you check"
            )
        selection = target
    elif isinstance(target, (str, N.Selector)):
        selection = select(model, target)
    else:
        raise TargetselError(
            f"check(model, target): target must be a Selection, a query string or a PEFT config, "
            f"got {type(target).__name__}"
        )
    positions = selection._mask().nonzero().flatten().tolist()
    return _Subject(model, index, positions, config, selection=selection)


def check(model: nn.Module, target, *, config: Any = None) -> list[Finding]:
    """Findings about what PEFT would do with `target` on `model`, errors first.

    `target` is a `Selection`, a query string, or a PEFT config (then the checked set is what PEFT
    would target, `verify(model, config)`). The method-dependent checks (what the method can wrap,
    its adapter prefix, `modules_to_save`) follow `config=` — e.g. `check(model, sel,
    config=IA3Config(...))` — or the target config itself; without either, LoRA's defaults apply.
    """
    subject = _resolve(model, target, config)
    findings: list[Finding] = []
    rejected = subject.outcome is not None and subject.outcome.error is not None
    if not subject.positions and rejected and "NoMatchingPeftModuleError" not in subject.outcome.error:
        from targetsel.bridge.peft_rules import peft_rejects

        findings += peft_rejects(subject)
    elif not subject.positions:
        findings += _empty_selection(subject)
        findings += _all_frozen(subject)
    else:
        for rule in _RULES:
            findings += rule(subject)
    findings.sort(key=lambda f: (_RANK[f.severity], _ORDER.get(f.code, len(_ORDER))))
    return findings


# ---------------------------------------------------------------------------- rules


def _finding(code: str, message: str, subject: _Subject, positions: Sequence[int] = ()) -> Finding:
    names = tuple(subject.index.names[i] for i in sorted(set(positions)))
    return Finding(code, CODES[code].severity, message, names)


def _empty_selection(s: _Subject) -> list[Finding]:
    from targetsel.views.diagnose import explain_empty, nearest_misses_text, selector_words, target_words

    if s.selection is not None:
        text = explain_empty(s.selection)
        words = selector_words(s.selection._node)
        return [_finding("empty-selection", text + nearest_misses_text(s.index, words), s)]
    cfg = s.config
    text = (
        f"{type(cfg).__name__}(target_modules={cfg.target_modules!r}) targets none of the "
        f"{s.index.size - 1} modules of {type(s.model).__name__}"
    )
    cleared = _without_match_fields(s)
    if cleared:
        text += f"; without {cleared[0]} it would target {len(cleared[1])}: {s.grouped(cleared[1], 4)}"
    text += "; get_peft_model would raise ValueError."
    text += nearest_misses_text(s.index, target_words(cfg.target_modules))
    return [_finding("empty-selection", text + " Name modules that exist, or build the targets with targetsel.bridge.patch(config, select(model, ...)).", s)]


def _without_match_fields(s: _Subject):
    """For an empty config target: (field text, names) if removing exclude/modules_to_save/layers fields changes that."""
    from targetsel.bridge.verify import verify

    present = {f: getattr(s.config, f, None) for f in ("exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern")}
    present = {f: v for f, v in present.items() if v not in (None, [], "", set())}
    if not present:
        return None
    try:
        cleared = dataclasses.replace(copy.deepcopy(s.config), **{f: None for f in present})
        names = verify(s.model, cleared)
    except Exception:
        return None
    if not names:
        return None
    return ", ".join(present), names


def _all_frozen(s: _Subject) -> list[Finding]:
    from targetsel.query import nodes as N

    if s.selection is None:
        return []
    if not any(isinstance(n, N.Flag) and n.kind == "trainable" for n in N.walk(s.selection._node)):
        return []
    n_params = len(s.index.params)
    if n_params == 0 or bool(s.index.requires_grad_vector().any()):
        return []
    return [
        _finding(
            "all-frozen",
            f"trainable() ran on {type(s.model).__name__}, whose {n_params} parameters all have requires_grad=False, "
            "so it keeps nothing. If you froze the base model before selecting (get_peft_model and "
            "prepare_model_for_kbit_training freeze it too), select first, then freeze; or select by what the "
            "modules are (.linear() - .under('vision_tower')) instead of by grad state.",
            s,
        )
    ]


def nested_pairs(index, mask: torch.Tensor) -> list[tuple[int, int]]:
    """(ancestor, descendant) position pairs of selected modules, nearest selected ancestor for each descendant."""
    inner = (index.ancestors_mask(mask) & mask).nonzero().flatten().tolist()
    selected = mask.tolist()
    pairs = []
    for i in inner:
        p = index.parents[i]
        while p > 0 and not selected[p]:
            p = index.parents[p]
        pairs.append((p, i))
    return pairs


def _mask_of(s: _Subject) -> torch.Tensor:
    mask = torch.zeros(s.index.size, dtype=torch.bool)
    if s.positions:
        mask[torch.tensor(s.positions, dtype=torch.long)] = True
    return mask


def _nested_targets(s: _Subject) -> list[Finding]:
    pairs = nested_pairs(s.index, _mask_of(s))
    if not pairs:
        return []
    names = s.index.names
    shown = "\n".join(f"  {names[a]}  ⊃  {names[d]}" for a, d in pairs[:8])
    more = f"\n  … and {len(pairs) - 8} more" if len(pairs) > 8 else ""
    if s.from_config:
        fix = (
            "Name only one level in target_modules (the layers, e.g. q_proj), or build the targets with "
            "targetsel.bridge.patch(config, select(model, ...).leaf())."
        )
    else:
        fix = "Keep one level: add .leaf() (innermost) or .outermost() (outermost), or & leaf / & outermost in a query."
    message = (
        f"{len(pairs)} selected module(s) sit inside another selected module; PEFT would wrap the outer "
        f"one and then crash (AttributeError) reaching the inner one:\n{shown}{more}\n{fix}"
    )
    return [_finding("nested-targets", message, s, [p for pair in pairs for p in pair])]


def _frozen_target(s: _Subject) -> list[Finding]:
    from targetsel.views.diagnose import frozen_root

    total, requiring = s.grad
    frozen = [i for i in s.positions if total[i] > 0 and requiring[i] == 0]
    if not frozen:
        return []
    roots = list(dict.fromkeys(frozen_root(s.index, i, total, requiring) for i in frozen))
    outer = [s.index.names[r] for r in roots if r not in frozen]
    inside = f", all inside the frozen {s.grouped(outer, 3)}" if outer and len(outer) <= 3 else ""
    if s.from_config:
        fix = (
            "A name-only target_modules cannot tell them apart from the trainable modules of the same name: build the "
            "targets with targetsel.bridge.patch(config, select(model).linear().trainable())"
            + (f", or set exclude_modules=r\"{re.escape(outer[0])}" + r'\..*"' if outer else "")
            + "."
        )
    else:
        fix = "Leave them out: add .trainable() (& trainable)" + (f" or - under:{outer[0]}" if outer else "") + "."
    message = (
        f"{len(frozen)} of the {len(s.positions)} selected modules have every parameter frozen "
        f"(requires_grad=False){inside}: {s.grouped([s.index.names[i] for i in frozen])}. PEFT matches by name and "
        f"gives them trainable {s.method} adapters anyway, so the part you froze gets trained. {fix}"
    )
    return [_finding("frozen-target", message, s, frozen)]


# ------------------------------------------------------------------ what the method can wrap (PEFT's own dispatch)


@dataclass(frozen=True)
class _Probe:
    supported: bool
    wrapper: Optional[type] = None  # the PEFT layer class it becomes, when known
    reason: str = ""  # PEFT's words when it cannot wrap it
    frozen: tuple[str, ...] = ()  # the module's own parameters get_peft_model freezes
    kept: tuple[str, ...] = ()  # … and those it leaves trainable
    internals: Optional[tuple[str, ...]] = None  # names PEFT adds under the wrapped module (base_layer, lora_A.default, …)


_DATA_DEPENDENT_INIT = ("pissa", "olora", "loftq", "eva", "corda", "orthogonal")


def _probe_config(config, target_modules):
    """A copy of `config` that targets only `target_modules` and changes nothing PEFT's dispatch reads."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {"target_modules": target_modules}
    neutral = {
        "exclude_modules": None,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_parameters": None,
        "trainable_token_indices": None,
        "layer_replication": None,
        "ensure_weight_tying": False,
        "feedforward_modules": [],
        "inference_mode": False,
    }
    changes.update({k: v for k, v in neutral.items() if k in fields})
    for name in ("init_lora_weights", "init_weights"):  # meta tensors have no data to decompose
        value = getattr(config, name, None)
        if name in fields and isinstance(value, str) and value.lower().startswith(_DATA_DEPENDENT_INIT):
            changes[name] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataclasses.replace(copy.deepcopy(config), **changes)


def meta_copy(module: nn.Module) -> nn.Module:
    """A structural copy of `module` whose parameters and buffers live on the meta device (no data copied)."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        trainable = p.dtype.is_floating_point or p.dtype.is_complex
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=trainable)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


_UNSUPPORTED_WORDS = re.compile(r"not supported|unsupported", re.I)
_PEFT_LIST = re.compile(r"(currently,? only .*)", re.I | re.S)


def _peft_words(text: str) -> str:
    """PEFT's list of what it supports, without the module repr it puts in front."""
    m = _PEFT_LIST.search(text)
    words = m.group(1) if m else text
    words = " ".join(words.split()).rstrip(". ")
    return words[:1].upper() + words[1:]


def _static_supported(cls: type) -> bool:
    """The layer families PEFT's default LoRA dispatch checks with isinstance (used when the probe itself breaks)."""
    from targetsel.model.evaluate import is_linear_class

    return is_linear_class(cls) or issubclass(cls, (nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention))


def probe(module: nn.Module, config) -> _Probe:
    """Ask PEFT whether `config`'s method can wrap `module`, on a meta copy inside a one-module model."""
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    cls = type(module)
    try:
        holder = nn.Module()
        holder.add_module(_PROBE, meta_copy(module))
        cfg = _probe_config(config, f"^{_PROBE}$")
    except Exception:  # an attribute deepcopy cannot copy: fall back to the families PEFT dispatches on
        return _Probe(_static_supported(cls), reason="" if _static_supported(cls) else "it is not a layer type PEFT wraps")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inject_adapter_in_model(cfg, holder)
    except Exception as exc:
        text = str(exc)
        if _UNSUPPORTED_WORDS.search(text):
            return _Probe(False, reason=_peft_words(text))
        if _static_supported(cls):  # a probe artefact (meta weights), not PEFT's answer
            return _Probe(True)
        return _Probe(False, reason=f"get_peft_model fails on it with {type(exc).__name__}" + (f": {_peft_words(text)}" if text else ""))
    wrapped = getattr(holder, _PROBE)
    if not isinstance(wrapped, BaseTunerLayer):
        return _Probe(True, wrapper=type(wrapped))
    base = wrapped.get_base_layer()
    own = list(base.named_parameters())
    return _Probe(
        True,
        wrapper=type(wrapped),
        frozen=tuple(n for n, p in own if not p.requires_grad),
        kept=tuple(n for n, p in own if p.requires_grad),
        internals=tuple(n for n, _ in wrapped.named_modules(remove_duplicate=False) if n),
    )


def _probes(s: _Subject) -> dict[type, _Probe]:
    """One probe per distinct class among the selected modules (on its first module)."""
    found: dict[type, _Probe] = {}
    modules = s.index.modules
    for i in s.positions:
        cls = type(modules[i])
        if cls not in found:
            found[cls] = probe(modules[i], s.config)
    return found


def _wrap_findings(s: _Subject) -> list[Finding]:
    probes = _probes(s)
    modules, n_children = s.index.modules, s.index.n_children
    unsupported = [i for i in s.positions if not probes[type(modules[i])].supported]
    if unsupported and not s.from_config:
        # Targets PEFT's MoE conversion turns into target_parameters (a router's `gate`) never reach the
        # dispatch: patch() says what PEFT does with them instead.
        from targetsel.bridge.verify import converted_names

        converted = converted_names(s.model, [s.index.names[i] for i in unsupported])
        unsupported = [i for i in unsupported if s.index.names[i] not in converted]
    containers = [i for i in unsupported if n_children[i] > 0]
    leaves = [i for i in unsupported if n_children[i] == 0]
    out = []
    if containers:
        out.append(_container_finding(s, containers, probes))
    if leaves:
        out.append(_unsupported_finding(s, leaves, probes))
    out += _subclass_findings(s, probes)
    return out


def _by_class(s: _Subject, positions: Sequence[int]) -> dict[type, list[int]]:
    groups: dict[type, list[int]] = {}
    for i in positions:
        groups.setdefault(type(s.index.modules[i]), []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def _fix_for_layers(s: _Subject) -> str:
    if s.from_config:
        return "Name the layers themselves in target_modules (e.g. q_proj, or \"all-linear\"), or build the targets with targetsel.bridge.patch(config, select(model).linear())."
    return "Keep the layers the method wraps: add .linear() (& linear in a query)."


def _container_finding(s: _Subject, positions: list[int], probes) -> Finding:
    groups = _by_class(s, positions)
    kinds = ", ".join(f"{cls.__name__} ×{len(p)}" for cls, p in groups.items())
    reason = next(iter(probes[cls].reason for cls in groups if probes[cls].reason), "")
    message = (
        f"{len(positions)} selected module(s) are containers — modules with children, not layers — that "
        f"{s.method} cannot wrap ({kinds}): {s.grouped([s.index.names[i] for i in positions])}. get_peft_model "
        f"would raise ValueError" + (f" ({reason})" if reason else "") + ". Select the layers inside them instead: "
        + ("name those layers in target_modules, or build the targets with targetsel.bridge.patch(config, select(model).under(NAME).linear())."
           if s.from_config else "add .linear() (& linear), e.g. select(model).under(NAME).linear().")
    )
    return _finding("container-target", message, s, positions)


def _unsupported_finding(s: _Subject, positions: list[int], probes) -> Finding:
    groups = _by_class(s, positions)
    parts = []
    for cls, ps in groups.items():
        parts.append(f"{cls.__name__} ×{len(ps)} ({s.grouped([s.index.names[i] for i in ps], 3)})")
    reason = next(iter(probes[cls].reason for cls in groups if probes[cls].reason), "")
    message = (
        f"{s.method} cannot wrap {len(positions)} selected module(s) of {len(groups)} type(s): {'; '.join(parts)}. "
        f"PEFT's dispatch rejects them" + (f" — {reason}" if reason else "") + f"; get_peft_model would raise. {_fix_for_layers(s)}"
    )
    return _finding("unsupported-type", message, s, positions)


def _library_base(cls: type) -> Optional[type]:
    """The nearest base class of `cls` that is a torch layer (or transformers' Conv1D); None for library classes."""
    def is_library(c: type) -> bool:
        return c.__module__.startswith("torch.nn.modules.") or c.__module__ == "transformers.pytorch_utils"

    if is_library(cls):
        return None
    for base in cls.__mro__[1:]:
        if base is nn.Module or not (isinstance(base, type) and issubclass(base, nn.Module)):
            return None
        if is_library(base):
            return base
    return None


@functools.lru_cache(maxsize=None)
def _base_layout(base: type) -> tuple[frozenset, frozenset]:
    """(parameter names, child names) of a default instance of a torch layer class, built on meta."""
    try:
        sig = inspect.signature(base.__init__)
        required = [
            p for p in list(sig.parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inst = base(*[1] * len(required))
    except Exception:
        return frozenset(), frozenset()
    return frozenset(k for k, v in inst._parameters.items() if v is not None), frozenset(inst._modules)


def _signature(fn) -> str:
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return "forward(...)"
    return "forward(" + ", ".join(str(p) for p in params) + ")"


def _subclass_findings(s: _Subject, probes) -> list[Finding]:
    out = []
    for cls, positions in _by_class(s, s.positions).items():
        pr = probes[cls]
        base = _library_base(cls)
        if not pr.supported or base is None:
            continue
        if pr.wrapper is not None and not pr.wrapper.__module__.endswith(".layer"):
            continue  # a dedicated PEFT layer (quantized backends, custom mappings), not the base class's
        module = s.index.modules[positions[0]]
        base_params, base_children = _base_layout(base)
        children = [k for k, v in module._modules.items() if v is not None and k not in base_children]
        params = [k for k, v in module._parameters.items() if v is not None and k not in base_params]
        forward_overridden = getattr(cls, "forward", None) is not getattr(base, "forward", None)
        if not (children or params or forward_overridden):
            continue  # a subclass that adds nothing behaves exactly like its base class
        adds = []
        if children:
            adds.append("child modules " + ", ".join(children))
        if params:
            adds.append("parameters " + ", ".join(params))
        signature = _signature(cls.forward)
        if forward_overridden:
            adds.append(signature)
        names = [s.index.names[i] for i in positions]
        base_name = f"{base.__module__.split('.')[0]}.nn.{base.__name__}" if base.__module__.startswith("torch.") else base.__name__
        wrapper = f" ({pr.wrapper.__module__}.{pr.wrapper.__qualname__})" if pr.wrapper is not None else ""
        takes_more = forward_overridden and len(signature.split(",")) > 1
        effects = [
            f"its update is computed from the first input alone and added to whatever {signature} returns"
            + (" (the extra arguments never reach the adapter)" if takes_more else ""),
            "merging writes into `weight` only",
        ]
        if pr.frozen:
            effects.append(f"get_peft_model freezes the module's own parameters ({', '.join(pr.frozen)})")
        if pr.kept:
            effects.append(f"and leaves {', '.join(pr.kept)} trainable")
        message = (
            f"{len(positions)} selected {cls.__name__} module(s) subclass {base_name} and add {' and '.join(adds)}: "
            f"{s.grouped(names)}. {s.method} wraps each as a plain {base.__name__}{wrapper}: {'; '.join(effects)}. "
            f"Leave them out (- type:{cls.__name__}), or, if you mean to adapt them, check the wrapped forward and "
            "re-enable the parameters that must keep training after get_peft_model."
        )
        out.append(_finding("subclass-target", message, s, positions))
    return out


# ------------------------------------------------------------------ names, heads, modules_to_save, sharing


def _output_head(s: _Subject) -> list[Finding]:
    index = s.index
    head = index.output_head_position()
    ties = _embedding_ties(index)
    hits = [i for i in s.positions if i == head or i in ties]
    if not hits:
        return []
    tie_of = next((ties[i] for i in hits if i in ties), None)
    names = [index.names[i] for i in hits]
    tie = f" (its {tie_of[1]} is tied to {index.names[tie_of[0]]}.weight)" if tie_of else ""
    cost = ""
    first = index.modules[hits[0]]
    r = getattr(s.config, "r", None)
    if isinstance(first, nn.Linear) and isinstance(r, int):
        cost = (f" {s.method} at r={r} adds {r}×({first.in_features}+{first.out_features}) = "
                f"{r * (first.in_features + first.out_features):,} parameters there.")
    merge = " Because the weight is shared, merging the adapter changes the input embeddings too." if tie_of else ""
    # .linear() leaves out what get_output_embeddings() returns, not every module tied to an embedding.
    linear_note = "; .linear() never selects the head" if head in hits else ""
    fix = (f"Leave it out (- glob:{names[0]}{linear_note})" if not s.from_config
           else f"Leave it out of target_modules (exclude_modules=[{names[0]!r}])")
    what = (f"The output head {s.grouped(names, 3)} is selected" if head in hits
            else f"A module holding an embedding's weight is selected: {s.grouped(names, 3)}")
    message = (
        f"{what}{tie}: an adapter there re-learns the vocabulary projection rather than the model's behaviour."
        f"{cost}{merge} {fix}, unless you mean to adapt the output layer."
    )
    return [_finding("output-head", message, s, hits)]


def _embedding_ties(index) -> dict[int, tuple[int, str]]:
    """Positions of modules holding an embedding's weight as their own parameter → (embedding position,
    parameter name); cached with the index.

    Found from structure — the weight of every `nn.Embedding`, and of whatever `get_input_embeddings()`
    returns — so a plain module whose head reuses an embedding's weight is caught too. Embeddings that
    share a weight (an encoder's and a decoder's) are inputs, not heads, and are left out.
    """
    key = "targetsel.bridge.checks.embedding_ties"
    ties = index._cached.get(key)
    if ties is not None:
        return ties
    # Plain loops over the index's lists: a few ms at 60k modules, where tensor ops paid more to start.
    embedding_classes = {cid for cid, cls in enumerate(index.classes) if issubclass(cls, nn.Embedding)}
    sources = [pos for pos, cid in enumerate(index.class_ids) if cid in embedding_classes] if embedding_classes else []
    given = _input_embedding_position(index)
    if given is not None:  # the model's own input embedding names a tie it shares with other embeddings
        sources = [given] + [pos for pos in sources if pos != given]
    source_of: dict[int, int] = {}  # id(weight) → position of the embedding it is the weight of
    for pos in sources:
        weight = index.modules[pos]._parameters.get("weight")
        if weight is not None:
            source_of.setdefault(id(weight), pos)
    ties = {}
    if source_of:
        skip, params, modules = set(sources), index.params, index.modules
        # Registrations list every module holding a parameter (+1); the -1s are subtree-sum corrections.
        for pos, param, sign in zip(index.reg_pos, index.reg_param, index.reg_sign):
            if sign < 0 or pos in skip or pos in ties:
                continue
            weight = params[param]
            embedding = source_of.get(id(weight))
            if embedding is None:
                continue
            # The parent of a module listed under two names is registered too; only direct holders count.
            pname = next((k for k, p in modules[pos]._parameters.items() if p is weight), None)
            if pname is not None:
                ties[pos] = (embedding, pname)
    index._cached[key] = ties
    return ties


def _input_embedding_position(index) -> Optional[int]:
    getter = getattr(index.model_ref(), "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        embedding = getter()
    except Exception:  # some models raise NotImplementedError or AttributeError here
        return None
    if not isinstance(embedding, nn.Module):
        return None
    # By identity, as the tie itself is: once per index, as the ties are cached with it.
    return next((pos for pos, module in enumerate(index.modules) if module is embedding), None)


def _prefix(config) -> Optional[str]:
    try:
        from peft.utils.constants import PEFT_TYPE_TO_PREFIX_MAPPING

        prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(config.peft_type)
    except ImportError:  # pragma: no cover - older peft keeps it on the tuner only
        prefix = None
    if prefix is None:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        prefix = getattr(PEFT_TYPE_TO_TUNER_MAPPING.get(config.peft_type), "prefix", None)
    return prefix or None


def _clash_effects(config, prefix: str) -> tuple[str, ...]:
    """What the installed PEFT does with base names containing `prefix`, measured on a tiny meta model."""
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import get_peft_model_state_dict

    clash_target, clash_other = f"t_{prefix}x", f"b_{prefix}y"
    with torch.device("meta"):
        model = nn.Module()
        model.plain = nn.Linear(64, 64)
        model.add_module(clash_target, nn.Linear(64, 64))
        model.add_module(clash_other, nn.Linear(64, 64))
    effects = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = _probe_config(config, ["plain", clash_target])
        cfg.task_type = None  # a bare nn.Module, not a transformers task model
        peft_model = get_peft_model(model, cfg)
        base = peft_model.base_model.model
        if any(p.requires_grad for p in getattr(base, clash_other).parameters()):
            effects.append("get_peft_model leaves their parameters trainable")
        if any(clash_other in k for k in get_peft_model_state_dict(peft_model)):
            effects.append("get_peft_model_state_dict saves them into the adapter file")
        try:  # some methods allow one adapter only (AdaLoRA)
            peft_model.add_adapter("targetsel_second", copy.deepcopy(cfg))
        except Exception:
            pass
        else:
            peft_model.delete_adapter("targetsel_second")
            if any(".targetsel_second" in n for n, _ in getattr(base, clash_target).named_parameters()):
                effects.append("delete_adapter() leaves the adapter in place on targeted modules with such names")
        unloaded = peft_model.unload()
        if isinstance(getattr(unloaded, clash_target), BaseTunerLayer):
            effects.append("unload()/merge_and_unload() leave targeted modules with such names wrapped")
    return tuple(effects)


_CLASH_EFFECTS: dict[tuple[type, str], Optional[tuple[str, ...]]] = {}


def _measured_clash_effects(config, prefix: str) -> Optional[tuple[str, ...]]:
    """The measured effects (once per config class), or None when the measurement itself fails."""
    key = (type(config), prefix)
    if key not in _CLASH_EFFECTS:
        _CLASH_EFFECTS[key] = None
        # The behaviour is the method's code, not this config's options: try the defaults first
        # (options such as use_dora cannot initialise a second adapter on meta weights).
        for make in (type(config), lambda: config):
            try:
                _CLASH_EFFECTS[key] = _clash_effects(make(), prefix)
                break
            except Exception:
                continue
    return _CLASH_EFFECTS[key]


def _adapter_name_clash(s: _Subject) -> list[Finding]:
    prefix = _prefix(s.config)
    if not prefix:
        return []
    index = s.index
    positions, shown = [], []
    for i, (name, module) in enumerate(zip(index.names, index.modules)):
        if not i:
            continue
        if prefix in name.rsplit(".", 1)[-1]:
            positions.append(i)
            shown.append(name)
            continue
        own = [k for k, v in module._parameters.items() if v is not None and prefix in k]
        if own:
            positions.append(i)
            shown += [f"{name}.{k}" for k in own]
    if not positions:
        return []
    import peft

    effects = _measured_clash_effects(s.config, prefix)
    if effects:
        installed = f"With the installed peft {peft.__version__}: " + "; ".join(effects) + "."
    elif effects is not None:
        installed = f"The installed peft {peft.__version__} tells adapter weights apart structurally."
    else:
        installed = ""
    message = (
        f"{len(shown)} base-model name(s) of {type(s.model).__name__} contain {prefix!r}, the prefix PEFT gives "
        f"{s.method}'s own weights: {s.grouped(shown)}. {installed} Older PEFT versions find adapter weights by this "
        "prefix: get_peft_model leaves such parameters trainable and saves them into the adapter file. Rename the "
        "modules if you can; otherwise check print_trainable_parameters() and the saved adapter's keys."
    ).replace("  ", " ")
    return [_finding("adapter-name-clash", message, s, positions)]


def _effective_modules_to_save(config) -> list[str]:
    names = list(getattr(config, "modules_to_save", None) or [])
    task = getattr(config, "task_type", None)
    if str(getattr(task, "value", task)) == "SEQ_CLS":  # PeftModelForSequenceClassification adds these before injecting
        names += [n for n in ("classifier", "score") if n not in names]
    return names


def _modules_to_save_overlap(s: _Subject) -> list[Finding]:
    from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists

    saved = _effective_modules_to_save(s.config)
    if not saved:
        return []
    probe_cfg = _probe_config(s.config, ".*")
    probe_cfg.modules_to_save = saved
    if s.from_config:
        from targetsel.bridge.verify import name_matches

        cleared = dataclasses.replace(copy.deepcopy(s.config), modules_to_save=None)
        candidates = name_matches(s.model, cleared)
    else:
        candidates = s.positions
    hits = [i for i in candidates if isinstance(check_target_module_exists(probe_cfg, s.index.names[i]), _ExcludedModule)]
    if not hits:
        return []
    added = "" if saved == list(getattr(s.config, "modules_to_save", None) or []) else " (task_type=SEQ_CLS adds classifier, score)"
    message = (
        f"{type(s.config).__name__} carries modules_to_save={getattr(s.config, 'modules_to_save', None)!r}{added}, "
        f"whose modules PEFT trains in full instead of adapting: {len(hits)} selected module(s) would not be targeted: "
        f"{s.grouped([s.index.names[i] for i in hits])} — PEFT skips them silently. Remove them from the selection "
        "or from modules_to_save (patch(..., strict=False) accepts the skip with a warning)."
    )
    return [_finding("modules-to-save-overlap", message, s, hits)]


def _aliases(index) -> dict[int, list[str]]:
    """Positions of modules registered under more than one name → their other names (cached with the index)."""
    key = "targetsel.bridge.checks.aliases"
    cached = index._cached.get(key)
    if cached is None:
        model = index.model_ref()
        by_id: dict[int, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            by_id.setdefault(id(module), []).append(name)
        cached = {}
        for pos, module in enumerate(index.modules):
            names = by_id.get(id(module), [])
            if len(names) > 1:
                cached[pos] = [n for n in names if n != index.names[pos]]
        index._cached[key] = cached
    return cached


def _shared_module(s: _Subject) -> list[Finding]:
    aliases = _aliases(s.index)
    hits = [i for i in s.positions if i in aliases]
    if not hits:
        return []
    pairs = ", ".join(f"{s.index.names[i]} (also {', '.join(aliases[i][:3])})" for i in hits[:4])
    more = f", … and {len(hits) - 4} more" if len(hits) > 4 else ""
    message = (
        f"{len(hits)} selected module(s) are registered under more than one name: {pairs}{more}. PEFT replaces a "
        "module under its first name only, so calls through the other names run the original layer without the "
        "adapter. Untie the modules before get_peft_model, or make sure the model calls them through the first name."
    )
    return [_finding("shared-module", message, s, hits)]


def _peft_rules():
    from targetsel.bridge.peft_rules import RULES

    return RULES


_RULES = (
    _nested_targets,
    _wrap_findings,
    _modules_to_save_overlap,
    _frozen_target,
    _output_head,
    _adapter_name_clash,
    _shared_module,
    *_peft_rules(),
)


# ---------------------------------------------------------------------------- acting on findings (patch)


def enforce(findings: Sequence[Finding], *, strict: bool = True, what: str = "patch()", stacklevel: int = 3) -> list[Finding]:
    """Raise for errors, warn once for each warning; return the errors that `strict=False` downgraded.

    The raised class is that of the first error (`EmptySelectionError`, `NestedTargetsError`,
    `ModulesToSaveOverlapError`, else `PreflightError`); its message starts with that error's
    message and lists the others; `.findings` holds them all.
    """
    errors = [f for f in findings if f.severity == "error"]
    downgraded = [] if strict else [f for f in errors if not CODES[f.code].peft_fails]
    errors = [f for f in errors if f not in downgraded]
    if errors:
        first = errors[0]
        text = first.message
        if len(errors) > 1:
            text += f"\n\n{len(errors) - 1} more error(s) found by {what} before get_peft_model:\n" + "\n".join(
                f"  [{f.code}] {f.message}" for f in errors[1:]
            )
        if strict and any(not CODES[f.code].peft_fails for f in errors):
            text += f"\n({what.rstrip('()')}(..., strict=False) turns modules-to-save-overlap into a warning.)"
        raise _ERROR_CLASSES.get(first.code, PreflightError)(text, findings)
    for f in [*downgraded, *(f for f in findings if f.severity == "warning")]:
        warning = TargetselWarning(f"[{f.code}] {f.message}")
        warning.finding = f  # type: ignore[attr-defined]
        warnings.warn(warning, stacklevel=stacklevel)
    return downgraded
