"""Names that explain why saved adapter keys find no module, and the `key_mapping` that fixes them.

Module names drift between the class an adapter was trained on and the one it is loaded onto:
`LlavaForConditionalGeneration` vs `LlavaModel` (`model.` prefix), a causal LM vs the VLM built
around it (`model.layers` vs `model.language_model.layers`), transformers 4 vs 5
(`language_model.model.*` → `model.language_model.*`). Two sources of renames are tried, in order:

1. transformers' own checkpoint conversion mapping for the model (`get_model_conversion_mapping`:
   its class- and model-type renamings, scoped to sub-models, plus the `legacy` ones), with its
   `base_model_prefix` added or removed as transformers does when loading a checkpoint saved from
   the base class or the head class;
2. a prefix rewrite inferred from the structure: the longest tail a dead key shares with a key the
   adapted model expects, the rewrite of their differing heads that explains the most keys (saved
   shapes that fit break ties).

A rename counts only when it is proven: the keys, rewritten by the `key_mapping` it yields, are
loaded again through PEFT's own load steps (`AdapterLoader.load`) and fewer keys are dropped,
none that loaded before.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Optional

from torch import nn

from targetsel.bridge.adapter_load import ADAPTER, PEFT_PREFIX, AdapterLoader, LoadOutcome
from targetsel.bridge.weights_header import TensorInfo

_MIN_TAIL = 4  # segments a dead key must share with an expected key (`self_attn.q_proj.lora_A.weight`)
_MAX_REWRITES = 4


@dataclass(frozen=True)
class Translation:
    """A rename that makes dropped keys load. `rule`: where it comes from; `names`: saved key →
    translated key, for the keys it rescues; `key_mapping`: the argument for
    `PeftModel.from_pretrained(model, dir, key_mapping=…)`; `still_dead`: keys dropped even then;
    `still_mismatched`: keys that then land on a layer of another shape."""

    rule: str
    names: Mapping[str, str] = field(default_factory=dict)
    key_mapping: Mapping[str, str] = field(default_factory=dict)
    still_dead: tuple[str, ...] = ()
    still_mismatched: tuple[str, ...] = ()


def find_translation(model: nn.Module, loader: AdapterLoader, tensors: Mapping[str, TensorInfo],
                     outcome: LoadOutcome) -> Optional[Translation]:
    """The best proven rename for `outcome.dead`, or None when no known or inferred rename helps."""
    dead = [k for k in outcome.dead if k in tensors and k.startswith(PEFT_PREFIX)]
    if not dead or loader.peft_model is None:
        return None
    candidates = [*_transformers_candidates(model, dead), _inferred_candidate(loader, tensors, dead)]
    best: Optional[Translation] = None
    for rule, pairs in candidates:
        if not pairs:
            continue
        mapping = key_mapping_for(pairs)
        again = loader.load(tensors, mapping)
        if again.error and not again.error.startswith("RuntimeError: size mismatch"):
            continue  # loading would still fail for another reason
        if set(outcome.placed) - set(again.placed) or len(again.dead) >= len(outcome.dead):
            continue  # it breaks keys that loaded, or rescues none
        rescued = {old: PEFT_PREFIX + new for old, new in pairs.items() if old not in again.dead}
        found = Translation(rule=rule, names=rescued, key_mapping=mapping, still_dead=again.dead,
                            still_mismatched=tuple(m[0] for m in again.mismatched))
        if best is None or len(found.still_dead) < len(best.still_dead):
            best = found
    return best


def key_mapping_for(pairs: Mapping[str, str]) -> dict[str, str]:
    """A `key_mapping` (regex → replacement, first match wins, keys without `base_model.model.`)
    that turns each old key into its new one: the differing heads plus the first shared segment,
    anchored, so keys that already load keep their names."""
    votes: dict[str, Counter] = {}
    for old, new in pairs.items():
        a, b = old.removeprefix(PEFT_PREFIX).split("."), new.removeprefix(PEFT_PREFIX).split(".")
        tail = 0
        while tail < min(len(a), len(b)) and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
            tail += 1
        if tail == 0:  # nothing shared: map the whole key
            votes.setdefault("^" + re.escape(".".join(a)) + "$", Counter())[".".join(b)] += 1
            continue
        head_a, head_b = a[: len(a) - tail + 1], b[: len(b) - tail + 1]
        pattern = "^" + re.escape(".".join(head_a) + ".")
        votes.setdefault(pattern, Counter())[".".join(head_b) + "."] += 1
    ordered = sorted(votes, key=lambda p: (-len(p), p))  # the most specific pattern first
    return {p: votes[p].most_common(1)[0][0].replace("\\", "\\\\") for p in ordered}


def _transformers_candidates(model: nn.Module, dead: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Renames from transformers' checkpoint conversion mapping, alone and with the base-model
    prefix removed or added on top, as transformers' loader does for base- vs head-class checkpoints."""
    out = []
    base = {k: k.removeprefix(PEFT_PREFIX) for k in dead}
    after = ""
    renamings = _renamings(model)
    if renamings:
        from transformers.core_model_loading import rename_source_key

        renamed = {k: rename_source_key(v, renamings, [])[0] for k, v in base.items()}
        renamed = {k: v for k, v in renamed.items() if v != base[k]}
        if renamed:
            used = [r for r in renamings if r.was_used()]
            shown = "; ".join(f"{r._original_source_patterns[0]} → {r._original_target_patterns[0]}" for r in used[:3])
            out.append((f"transformers' checkpoint conversion mapping for {type(model).__name__}: {shown}", renamed))
            base = {**base, **renamed}
            after = " after its conversion mapping"
    prefix = getattr(model, "base_model_prefix", "") or ""
    if prefix:
        dot = prefix + "."
        out.append((f"transformers' base-model prefix {prefix!r} removed{after} (an adapter saved from a head class)",
                    {k: v[len(dot):] for k, v in base.items() if v.startswith(dot)}))
        out.append((f"transformers' base-model prefix {prefix!r} added{after} (an adapter saved from the base class)",
                    {k: dot + v for k, v in base.items() if not v.startswith(dot)}))
    return out


def _renamings(model: nn.Module) -> list:
    """The pure renamings of transformers' conversion mapping for `model` (converters that fuse or
    split tensors are PEFT's own load step, not a rename)."""
    if not hasattr(getattr(model, "config", None), "model_type"):
        return []
    try:
        from transformers import PreTrainedModel
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except ImportError:  # transformers < 5: no conversion mapping
        return []
    if not isinstance(model, PreTrainedModel):
        return []
    try:
        transforms = get_model_conversion_mapping(model)
    except Exception:  # a model whose mapping transformers cannot build: no known rename
        return []
    return [t for t in transforms if isinstance(t, WeightRenaming)]


def _inferred_candidate(loader: AdapterLoader, tensors: Mapping[str, TensorInfo],
                        dead: list[str]) -> tuple[str, dict[str, str]]:
    """Up to a few head rewrites (`model.` → `model.language_model.`) that send dead keys onto
    keys the adapted model expects, chosen by how many keys each explains and how many of those
    have the expected shape."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    tuner = PEFT_TYPE_TO_TUNER_MAPPING[loader.config.peft_type]
    expected: dict[str, tuple] = {}
    for key, value in loader.state.items():
        if "base_layer" in key.split(".") or ADAPTER not in key.split("."):
            continue
        expected[tuner._remove_adapter_name_from_key(key, ADAPTER).removeprefix(PEFT_PREFIX)] = tuple(value.shape)
    tails: dict[str, list[str]] = {}
    for key in expected:
        parts = key.split(".")
        for i in range(len(parts) - _MIN_TAIL + 1):
            tails.setdefault(".".join(parts[i:]), []).append(".".join(parts[:i]))
    options: dict[str, list[tuple[str, str, str]]] = {}  # dead key → (old head, new head, new key)
    for key in dead:
        parts = key.removeprefix(PEFT_PREFIX).split(".")
        for i in range(len(parts) - _MIN_TAIL + 1):
            tail = ".".join(parts[i:])
            if tail in tails:
                old = ".".join(parts[:i])
                options[key] = [(old, new, f"{new}.{tail}" if new else tail) for new in tails[tail] if new != old]
                break
    pairs: dict[str, str] = {}
    remaining = {k: v for k, v in options.items() if v}
    for _ in range(_MAX_REWRITES):
        score: Counter = Counter()
        for key, choices in remaining.items():
            for old, new, target in choices:
                fits = expected.get(target) == tensors[key].shape
                score[(old, new)] += 1.5 if fits else 1.0  # shapes that fit break ties
        if not score:
            break
        (old, new), _ = score.most_common(1)[0]
        for key in list(remaining):
            hit = next((t for o, n, t in remaining[key] if (o, n) == (old, new)), None)
            if hit is not None:
                pairs[key] = hit
                del remaining[key]
    return "a prefix rewrite inferred from the module names (no transformers mapping explains it)", pairs
