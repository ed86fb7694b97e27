"""The bridge to PEFT beyond target_modules: target_parameters, per-group ranks and alphas,
audit after get_peft_model, locks and drift. Every case ends in a real get_peft_model where PEFT acts."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
from peft import IA3Config, LoraConfig, get_peft_model
from peft.utils.other import get_pattern_key
from torch import nn

import models
import targetsel as ts
from targetsel import audit, check_lock, patch, select, verify
from targetsel.bridge.verify import verify_parameters

SAFE_QUERY = "linear & trainable - type:PLoRA - under:(type:PLoRA)"  # the demo's LoRA-safe layers
# Fused 3-D expert weights (`experts.gate_up_proj` as one nn.Parameter) exist from transformers 5;
# transformers 4.x builds one module per expert (the older-stack CI pass, .ci/run).
needs_fused_experts = pytest.mark.skipif(
    int(__import__("transformers").__version__.split(".")[0]) < 5,
    reason="transformers < 5 has no fused expert parameters")


def tiny_moe(arch="mixtral", **extra):
    sizes = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=64, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=100)
    return models.hf_model(arch, **{**sizes, **extra})


def quiet_peft(model, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


# ---------------------------------------------------------------------------- target_parameters

# (arch, extra config, module query, parameter regex) — fused 3-D expert weights of transformers 5
FUSED = [
    ("mixtral", {"num_local_experts": 4}, "glob:**.mlp.experts", "gate_up_proj$"),
    ("mixtral", {"num_local_experts": 4}, "glob:**.mlp.experts & layers:1", "down_proj$"),
    ("qwen2_moe", {"num_experts": 4, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32}, "glob:**.mlp.experts", None),
    ("qwen3_moe", {"num_experts": 4, "moe_intermediate_size": 32}, "glob:**.mlp.experts & layers:0", "gate_up"),
]


@needs_fused_experts
@pytest.mark.parametrize("arch, extra, query, pattern", FUSED, ids=[f"{a}-{q}-{p}" for a, _, q, p in FUSED])
def test_fused_expert_parameters_are_targeted_exactly(arch, extra, query, pattern):
    model = tiny_moe(arch, **extra)
    psel = select(model, query).parameters(pattern)
    names = psel.names()
    assert names and all(n.rsplit(".", 1)[0] in select(model, query).names() for n in names)
    expected = [
        f"{m}.{p}" for m, mod in model.named_modules() if m in set(select(model, query).names())
        for p, _ in mod.named_parameters(recurse=False) if pattern is None or __import__("re").search(pattern, f"{m}.{p}")
    ]
    assert names == expected
    config = patch(LoraConfig(r=4), psel)
    assert verify_parameters(model, config) == names
    assert config.target_modules in ([], set())  # None would let PEFT add its per-architecture defaults
    peft_model = quiet_peft(model, config)
    wrapped_params = sorted(
        n.removeprefix("base_model.model.").rsplit(".lora_A", 1)[0].replace(".base_layer", "")
        for n, _ in peft_model.named_parameters() if ".lora_A." in n
    )
    assert sorted({n.rsplit(".", 1)[0] for n in names}) == sorted(set(wrapped_params))
    assert not any("q_proj" in n for n in models.wrapped_names(peft_model))
    assert audit(peft_model, psel).ok  # every selected parameter adapted, nothing else


@needs_fused_experts
def test_parameters_on_top_of_patched_modules_keep_both():
    model = tiny_moe(num_local_experts=4)
    modules = select(model, "linear & glob:**.self_attn.*")
    config = patch(patch(LoraConfig(r=4), modules), modules.parameters() if False else select(model, "glob:**.experts").parameters("down_proj"))
    assert verify(model, config) == modules.names()
    assert verify_parameters(model, config) == select(model, "glob:**.experts").parameters("down_proj").names()


def _param_suffix_trap():
    """`a.weight` and `x.a.weight` both exist: selecting only the outer one has no exact list."""
    root = nn.Module()
    root.a = nn.Linear(4, 4)
    root.x = nn.Module()
    root.x.a = nn.Linear(4, 4)
    return root


PARAMETER_ERRORS = [
    (lambda m: select(m).parameters(""), ts.PatternError, r"a non-empty regex string, got ''"),
    (lambda m: select(m).parameters("(["), ts.PatternError, r"invalid regex"),
    (lambda m: select(m, "glob:a").parameters("nothing").to_peft(), ts.SelectionError, r"no parameter of the 1 selected module\(s\) matches 'nothing'"),
    (lambda m: select(m, "glob:a").parameters().to_peft(), ts.SelectionError, r"2 unselected parameter name\(s\) end with a selected one \(e\.g\. \['x\.a\.weight', 'x\.a\.bias'\]\)"),
    (lambda m: patch(IA3Config(), select(m, "glob:x.a").parameters()), ts.ConfigError, r"IA3Config has no target_parameters"),
    (lambda m: patch(LoraConfig(), select(m, "glob:x.a").parameters(), ranks={"all": 2}), ts.ConfigError, r"ranks= and alphas= apply to module selections"),
    (lambda m: ts.ParameterSelection(["a"]), ts.TargetselError, r"ParameterSelection needs a Selection, got list"),
]


@pytest.mark.parametrize("call, error, message", PARAMETER_ERRORS, ids=[m for *_, m in PARAMETER_ERRORS])
def test_parameter_selection_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(_param_suffix_trap())


def test_inner_parameter_of_a_suffix_trap_is_exact():
    model = _param_suffix_trap()
    psel = select(model, "glob:x.a").parameters("weight")
    assert psel.to_peft() == ["x.a.weight"]
    assert verify_parameters(model, patch(LoraConfig(), psel)) == ["x.a.weight"]
    assert "1 parameter(s): [x.a.weight]" in repr(psel) and len(psel) == 1 and not psel.is_empty()


# ---------------------------------------------------------------------------- ranks and alphas


def _intended(selection, mapping, default):
    out = {}
    for key, value in mapping.items():
        sub = selection.where(key)
        for n in sub.names():
            out[n] = value
    return {n: out.get(n, default) for n in selection.names()}


RANK_CASES = [
    ("demo", SAFE_QUERY, {"glob:**.mlp.*": 32, "glob:multi_modal_projector.*": 4}, {"layers:0": 64}),
    ("demo", SAFE_QUERY, {"layers:-2..": 16}, None),
    ("demo", SAFE_QUERY, None, {"glob:**.down_proj": 1.5}),
    ("suffix_trap", "leaf & type:Linear", {"glob:attn.q_proj": 12}, {"glob:block.**": 3}),
    ("twelve_blocks", "type:Linear", {"layers:1": 3, "layers:10..11": 5}, {"layers:10": 7}),
]


@pytest.mark.parametrize("model_name, query, ranks, alphas", RANK_CASES, ids=[f"{m}-{r}-{a}" for m, _, r, a in RANK_CASES])
def test_ranks_and_alphas_reach_each_module_through_peft(model_name, query, ranks, alphas):
    model = getattr(models, model_name)()
    sel = select(model, query)
    config = patch(LoraConfig(r=8, lora_alpha=16), sel, ranks=ranks, alphas=alphas)
    want_r = _intended(sel, ranks or {}, 8)
    want_a = _intended(sel, alphas or {}, 16)
    # PEFT's own lookup gives every module its value ...
    for name in sel.names():
        assert config.rank_pattern.get(get_pattern_key(list(config.rank_pattern), name), 8) == want_r[name]
        assert config.alpha_pattern.get(get_pattern_key(list(config.alpha_pattern), name), 16) == want_a[name]
    # ... and the injected layers have it
    peft_model = quiet_peft(model, config)
    layers = {n: m for n, m in peft_model.base_model.model.named_modules() if n in want_r}
    assert {n: m.r["default"] for n, m in layers.items()} == want_r
    assert {n: m.lora_alpha["default"] for n, m in layers.items()} == want_a


def test_anchored_key_when_a_name_is_a_suffix_of_another():
    model = models.suffix_trap()
    sel = select(model, "leaf & type:Linear")
    assert "attn.q_proj" in sel.names() and "block.attn.q_proj" in sel.names()
    config = patch(LoraConfig(r=8), sel, ranks={select(model, "glob:attn.q_proj"): 2})
    assert list(config.rank_pattern) == [r"^attn\.q_proj"]
    assert get_pattern_key(list(config.rank_pattern), "block.attn.q_proj") == "block.attn.q_proj"  # not caught


RANK_ERRORS = [
    (LoraConfig(), {"glob:**.mlp.*": 0}, None, r"ranks\['glob:\*\*\.mlp\.\*'\] = 0: expected a positive integer"),
    (LoraConfig(), {"glob:**.mlp.*": 2.5}, None, r"expected a positive integer"),
    (LoraConfig(), {"glob:**.mlp.*": True}, None, r"expected a positive integer"),
    (LoraConfig(), None, {"glob:**.mlp.*": -1}, r"alphas\[.*\] = -1: expected a positive number"),
    (LoraConfig(), {3: 4}, None, r"keys are Selections or query strings, got int 3"),
    (LoraConfig(), [("glob:**.mlp.*", 4)], None, r"maps sub-selections .* got list"),
    (LoraConfig(), {"under:vision_tower": 4}, None, r"selects none of the 20 selected modules"),
    (LoraConfig(), {"glob:**.mlp.*": 4, "layers:0": 2}, None, r"is in two sub-selections with different values \(4 and 2\)"),
    (LoraConfig(rank_pattern={"q_proj": 4}), {"layers:0": 2}, None, r"already carries rank_pattern"),
    (IA3Config(feedforward_modules=[]), {"layers:0": 2}, None, r"IA3Config has no rank_pattern"),
    (LoraConfig(), {"trainabel": 2}, None, r"unknown atom 'trainabel'"),
]


@pytest.mark.parametrize("config, ranks, alphas, message", RANK_ERRORS, ids=[m for *_, m in RANK_ERRORS])
def test_rank_and_alpha_errors_leave_everything_untouched(config, ranks, alphas, message):
    model = models.demo()
    before = copy.deepcopy(config)
    with pytest.raises(ts.TargetselError, match=message), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch(config, select(model, SAFE_QUERY), ranks=ranks, alphas=alphas)
    assert config == before
    assert not [w for w in caught if issubclass(w.category, ts.TargetselWarning)]  # raised before any warning


# ---------------------------------------------------------------------------- audit


def test_audit_ok_after_patch_and_get_peft_model():
    model = models.demo()
    sel = select(model, SAFE_QUERY)
    lock = sel.lock()
    peft_model = quiet_peft(model, patch(LoraConfig(), sel))
    for reference in (sel, lock, lock["names"]):
        result = audit(peft_model, reference)
        assert result.ok and bool(result) and result.missing == () and result.unexpected == ()
        assert str(result) == f"audit ok: PEFT wrapped exactly the {len(lock['names'])} selected module(s)"


def test_audit_reports_missing_and_unexpected():
    model = models.demo()
    sel = select(model, "linear & glob:language_model.**.mlp.{up,down}_proj")
    names = sel.names()
    hand_written = LoraConfig(target_modules=["up_proj", "gate_proj"])  # forgot down_proj, added gate_proj
    peft_model = quiet_peft(model, hand_written)
    result = audit(peft_model, names)
    assert not result.ok
    assert result.missing == tuple(n for n in names if n.endswith("down_proj"))
    assert all(n.endswith("gate_proj") for n in result.unexpected) and len(result.unexpected) == 6
    assert "missing (6, selected but not wrapped): language_model.layers.{0..5}.mlp.down_proj (6)" in str(result)
    assert "unexpected (6, wrapped but not selected)" in str(result)


def test_audit_on_an_unwrapped_selection_model_evaluates_it_now():
    model = models.demo()
    other = models.demo()
    sel = select(other, SAFE_QUERY)
    peft_model = quiet_peft(model, patch(LoraConfig(), select(model, SAFE_QUERY)))
    assert audit(peft_model, sel).ok


# audit() errors, parameters, snapshots and selections made before injection: tests/bridge/test_audit.py


# ---------------------------------------------------------------------------- locks and drift


def test_lock_is_json_and_check_lock_sees_no_drift():
    model = models.demo()
    lock = select(model, SAFE_QUERY).lock()
    assert json.loads(json.dumps(lock)) == lock
    assert set(lock) == {"format", "query", "model_class", "count", "hash", "names", "versions"}
    assert set(lock["versions"]) == {"targetsel", "peft", "transformers", "torch"}
    assert lock["hash"].startswith("sha256:") and lock["count"] == len(lock["names"]) == 20
    drift = check_lock(models.demo(), lock)
    assert drift.ok and drift.added == () and drift.lost == () and drift.changed_versions == {}
    assert str(drift) == f"no drift: {SAFE_QUERY!r} selects the same modules"


def _unfreeze_vision(m):
    m.vision_tower.requires_grad_(True)


def _drop_projector(m):
    del m.multi_modal_projector


def _rename_plora(m):
    for layer in m.language_model.layers:
        attn = layer.self_attn
        attn.q_proj = nn.Linear(attn.q_proj.in_features, attn.q_proj.out_features, device="meta")


DRIFTS = [
    (_unfreeze_vision, 24, 0, "vision_tower.layers.{0..3}.self_attn.{q,k,v,out}_proj (16)"),
    (_drop_projector, 0, 2, "multi_modal_projector.linear_{1,2} (2)"),
    (_rename_plora, 6, 0, "language_model.layers.{0..5}.self_attn.q_proj (6)"),
]


@pytest.mark.parametrize("change, added, lost, shown", DRIFTS, ids=[c.__name__ for c, *_ in DRIFTS])
def test_check_lock_reports_drift(change, added, lost, shown):
    lock = select(models.demo(), SAFE_QUERY).lock()
    model = models.demo()
    change(model)
    drift = check_lock(model, lock)
    assert (len(drift.added), len(drift.lost)) == (added, lost) and not drift.ok
    assert shown in str(drift)


def test_check_lock_when_the_query_no_longer_resolves():
    lock = select(models.demo(), "linear & under:vision_tower").lock()
    model = models.demo()
    del model.vision_tower
    drift = check_lock(model, lock)
    assert drift.added == () and len(drift.lost) == lock["count"]
    assert "the query no longer resolves: under('vision_tower')" in str(drift)


def test_check_lock_reports_version_changes():
    lock = select(models.demo(), SAFE_QUERY).lock()
    lock["versions"]["transformers"] = "4.0.0"
    drift = check_lock(models.demo(), lock)
    assert drift.ok and drift.changed_versions["transformers"][0] == "4.0.0"
    assert "(after transformers 4.0.0 →" in str(drift)


@pytest.mark.parametrize("handed", ["the PeftModel", "the base model it rewrote"])
def test_check_lock_on_an_adapted_model_says_to_audit(handed):
    model = models.demo()
    lock = select(model, SAFE_QUERY).lock()
    peft_model = quiet_peft(model, patch(LoraConfig(), select(model, SAFE_QUERY)))
    target = peft_model if handed == "the PeftModel" else model
    with pytest.raises(ts.ModelRewrittenError, match=r"holds 20 PEFT adapter layer\(s\).*taken before injection.*"
                                                     r"audit\(peft_model, lock\)"):
        check_lock(target, lock)
    assert audit(peft_model, lock).ok  # what the error points to answers


def test_a_lock_taken_on_an_adapted_model_is_checked_there():
    model = models.demo()
    peft_model = quiet_peft(model, patch(LoraConfig(), select(model, SAFE_QUERY)))
    lock = select(peft_model, "glob:**.lora_A.default").lock()  # adapter internals, selected on purpose
    assert lock["adapted"] is True and lock["count"] == 20
    assert check_lock(peft_model, lock).ok
    assert "adapted" not in select(models.demo(), SAFE_QUERY).lock()  # unadapted locks are as before


def _edited(field, value):
    lock = select(models.demo(), SAFE_QUERY).lock()
    lock[field] = value
    return lock


LOCK_ERRORS = [
    (lambda: check_lock(models.demo(), ["a"]), ts.SpecError, r"a lock is the dict Selection\.lock\(\) returns, got list"),
    (lambda: check_lock(models.demo(), {"query": "linear"}), ts.SpecError, r"not a valid lock \(\d+ problem\(s\)\): format: Field required"),
    (lambda: check_lock(models.demo(), _edited("names", ["x"])), ts.SpecError, r"edited by hand"),
    (lambda: check_lock(models.demo(), _edited("format", 2)), ts.SpecError, r"lock format 2 is not supported"),
    (lambda: check_lock(models.demo(), _edited("query", "linear &")), ts.QuerySyntaxError, r"'&' needs an atom"),
    (lambda: select(models.demo()).where(lambda n, m: True).lock(), ts.NotSerialisableError, r"cannot be written as a query"),
]


@pytest.mark.parametrize("call, error, message", LOCK_ERRORS, ids=[m for *_, m in LOCK_ERRORS])
def test_lock_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
