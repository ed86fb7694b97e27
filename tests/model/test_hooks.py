"""Freshness: terminals reflect the model when they run, never a stale index."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import models
from targetsel import PatternError, select
from targetsel.model.index import forget, get_index


def test_requires_grad_change_is_seen_by_an_existing_selection():
    model = models.demo(freeze_vision=False)
    trainable = select(model).linear().trainable()
    before = trainable.names()
    model.vision_tower.requires_grad_(False)
    after = trainable.names()
    assert len(after) < len(before)
    assert not any(n.startswith("vision_tower") for n in after)


def test_replaced_submodule_is_seen():
    model = models.demo()
    sel = select(model).type("LayerNorm")
    n = len(sel)
    with torch.device("meta"):
        model.language_model.norm = nn.RMSNorm(512)
    assert len(sel) == n - 1
    assert "language_model.norm" in select(model).type("RMSNorm").names()


def test_added_and_removed_submodules_are_seen():
    model = models.twelve_blocks()
    sel = select(model).glob("layers.*.attn.q_proj")
    assert len(sel) == 12
    with torch.device("meta"):
        model.layers.append(models.Block())
    assert len(sel) == 13
    del model.layers[12]
    # `del` fires no registration hook: the container check catches it.
    assert len(sel) == 12


def test_tying_a_parameter_is_seen():
    model = models.twelve_blocks()
    model.layers[0].mlp.requires_grad_(False)
    assert "layers.1.mlp" in select(model).trainable().names()
    model.layers[1].mlp.weight = model.layers[0].mlp.weight  # tie: now layers.1.mlp uses a frozen weight
    assert "layers.1.mlp" in select(model).mixed().names()


def test_unchanged_model_reuses_its_index():
    model = models.demo()
    a = get_index(model)
    select(model).linear().names()
    with torch.device("meta"):
        nn.Linear(2, 2)  # unrelated module construction bumps the global counter...
    assert get_index(model) is a  # ...but the structure check finds the model unchanged


def test_peft_injection_invalidates_the_index():
    from peft import LoraConfig, get_peft_model

    model = models.twelve_blocks()
    before = get_index(model)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    after = get_index(model)
    assert after is not before
    assert any(".base_layer" in n for n in after.names)


# ---------------------------------------------------------------------------- edits that fire no hook

def _linear():
    with torch.device("meta"):
        return nn.Linear(4, 4)


# Each edit changes the tree without torch's registration hooks seeing the container change itself.
HOOKLESS_EDITS = [
    ("del-attribute", lambda m: delattr(m.layers[3], "mlp"), "layers.3.mlp", False),
    ("modulelist-insert", lambda m: m.layers.insert(0, models.Block()), "layers.12.mlp", True),
    ("modulelist-pop", lambda m: m.layers.pop(11), "layers.11.mlp", False),
    ("moduledict-pop", lambda m: m.extra.pop("b"), "extra.b", False),
    ("moduledict-clear", lambda m: m.extra.clear(), "extra.a", False),
    ("sequential-del", lambda m: m.seq.__delitem__(0), "seq.1", False),
    # a module built now and written straight into `_modules` (as quantization code replaces layers):
    # building it fired the hooks, so the full comparison runs and sees the swap
    ("direct-write-new-module", lambda m: m.layers[0]._modules.__setitem__("mlp", nn.LayerNorm(4, device="meta")), None, None),
]


def _edited_model():
    model = models.twelve_blocks()
    with torch.device("meta"):
        model.extra = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
        model.seq = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    return model


@pytest.mark.parametrize("label, edit, name, present", HOOKLESS_EDITS, ids=[e[0] for e in HOOKLESS_EDITS])
def test_edits_without_a_container_hook_are_seen(label, edit, name, present):
    model = _edited_model()
    linear = select(model).linear()
    regex = select(model).name(r"mlp$|extra\.|seq\.")
    before_linear, before_regex = linear.names(), regex.names()  # both cached now
    edit(model)
    assert linear.names() == [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert regex.names() == [n for n, _ in model.named_modules() if n and re.search(r"mlp$|extra\.|seq\.", n)]
    if name is not None:
        assert (name in linear.names()) is present
    else:
        assert "layers.0.mlp" not in linear.names() and "layers.0.mlp" in before_linear and before_regex


def test_swapping_prebuilt_children_needs_forget():
    """The one edit no check sees: children moved in place by hand, no module built since. `forget()` is for that."""
    model = models.twelve_blocks()
    ln = select(model).type("LayerNorm")
    assert "layers.0.norm" in ln.names()
    a, b = model.layers[0]._modules["mlp"], model.layers[0]._modules["norm"]
    model.layers[0]._modules["mlp"], model.layers[0]._modules["norm"] = b, a
    forget(model)
    assert "layers.0.mlp" in ln.names() and "layers.0.norm" not in ln.names()


# ---------------------------------------------------------------------------- caches kept per index

PATTERN_CASES = [
    ("name", r"attn\.[qv]_proj$"), ("name", r"^layers\.1\d?\."), ("name", "."), ("name", r"(?i)Q_PROJ"), ("name", r"(?<=\.)mlp$"),
    ("name", r"\d\.attn"), ("glob", "layers.*.attn.*"), ("glob", "**.{q,v}_proj"), ("glob", "layers.{0..3}.mlp"), ("glob", "**"),
]
DOMAINS = ["all", "linear", "layers:0..1", "leaf & layers:-3..", "type:LayerNorm"]


@pytest.mark.parametrize("kind, pattern", PATTERN_CASES)
def test_cached_pattern_results_equal_the_uncached_path(kind, pattern):
    """Whatever domains ask first (narrow ones leave names unmatched), every answer equals a fresh match."""
    from targetsel.query.globs import compile_glob
    from targetsel.query.patterns import compile_regex

    model = models.twelve_blocks()
    test = compile_regex(pattern).search if kind == "name" else compile_glob(pattern).fullmatch
    atom = f"name:/{pattern}/" if kind == "name" else f"glob:{pattern!r}".replace("'", '"')
    for domain in DOMAINS:
        want = [n for n in select(model, domain).names() if test(n)]
        assert select(model, f"({domain}) & {atom}").names() == want, domain
    assert select(model, atom).names() == [n for n, _ in model.named_modules() if n and test(n)]


def test_pattern_cache_is_bounded_and_errors_leave_nothing():
    from targetsel.model.matches import MAX_PATTERNS

    model = models.twelve_blocks()
    for i in range(MAX_PATTERNS + 5):
        select(model).name(f"layers\\.{i}\\.").names()
    cache = get_index(model).memo("pattern-matches", dict)
    assert len(cache) == MAX_PATTERNS and ("regex", "layers\\.0\\.") not in cache
    with pytest.raises(PatternError, match="fails on it while matching"):
        select(model).name(r"[[:alpha:]]\G{e<=1}").names()
    assert len(cache) == MAX_PATTERNS and not any(p == r"[[:alpha:]]\G{e<=1}" for _, p in cache)


def test_grad_sums_are_reused_only_while_the_flags_are_equal():
    model = models.twelve_blocks()
    index = get_index(model)
    first = index.grad_counts()[1]
    assert index.grad_counts()[1] is first
    model.layers[0].requires_grad_(False)
    second = index.grad_counts()[1]
    assert second is not first and int((first - second).abs().sum()) > 0


def test_targetsel_dry_runs_keep_every_index_current():
    """verify()/patch() build throwaway models (skeletons, probes): they must not send the next query
    through the full structure check — and registrations by user code still must."""
    from peft import LoraConfig

    from targetsel import verify
    from targetsel.model.hooks import current_generation, throwaway_models

    model = models.twelve_blocks()
    index = get_index(model)
    before = current_generation()
    verify(model, LoraConfig(r=2, target_modules=["q_proj"]), real=True)
    with throwaway_models():
        _linear()
    assert current_generation() == before and get_index(model) is index and index.generation == before
    _linear()
    assert current_generation() != before


def test_throwaway_models_is_per_thread_and_nests():
    import threading

    from targetsel.model.hooks import current_generation, throwaway_models

    seen = []
    with throwaway_models():
        with throwaway_models():
            _linear()
        start = current_generation()
        _linear()
        assert current_generation() == start
        worker = threading.Thread(target=lambda: (_linear(), seen.append(current_generation())))
        worker.start()
        worker.join()
    assert seen and seen[0] != start  # another thread's registrations still count
    _linear()
    assert current_generation() != seen[0]
