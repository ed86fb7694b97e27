"""check() findings judged by a dry run of PEFT (targetsel/bridge/checks/peft_rules.py), and dry_run()'s own
contract: every code fires on the case it names and stays silent on its near miss, and each
finding is confirmed by a real get_peft_model where PEFT's behaviour is the claim."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from peft import LoraConfig, TrainableTokensConfig, get_peft_model
from torch import nn

import models
import targetsel as ts
from targetsel import check, select
from targetsel.errors import PeftRejectionError
from targetsel.bridge.verify import dry_run, verify


def tiny_moe(model_type: str, **extra) -> nn.Module:
    sizes = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=100)
    return models.hf_model(model_type, **{**sizes, **extra})


def deepseek() -> nn.Module:
    # first_k_dense_replace=1: layer 0 has a dense MLP, layer 1 routed + shared experts
    return tiny_moe("deepseek_v3", first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2,
                    moe_intermediate_size=32, n_shared_experts=1, q_lora_rank=16, kv_lora_rank=16,
                    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_group=1, topk_group=1)


def mamba() -> nn.Module:
    return models.hf_model("mamba", hidden_size=64, num_hidden_layers=2, vocab_size=100, state_size=4)


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.v = nn.Linear(8, 8), nn.Linear(8, 8)


def head_suffix_model() -> nn.Module:
    """`attn_head` ends with `head` — a plain-endswith modules_to_save entry wraps it."""
    with torch.device("meta"):
        m = nn.Module()
        m.attn_head = _Attn()
        m.out = nn.Linear(8, 8)
    return m


def tied_llama() -> nn.Module:
    return tiny_moe("llama", tie_word_embeddings=True)


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# (id, model factory, target factory taking the model, code expected, code that must be absent)
CASES = [
    ("rewrites-one-liner", deepseek, lambda m: LoraConfig(target_modules=select(m, "linear").names()),
     "peft-rewrites-targets", None),
    ("rewrites-not-for-attention-only", deepseek, lambda m: LoraConfig(target_modules=select(m, "linear & glob:**.self_attn.*").names()),
     None, "peft-rewrites-targets"),
    ("rejects-mamba-config", mamba, lambda m: LoraConfig(target_modules=["in_proj", "out_proj"]), "peft-rejects", None),
    ("rejects-mamba-selection", mamba, lambda m: select(m, "linear"), "peft-rejects", None),
    ("mamba-without-out-proj", mamba, lambda m: select(m, "linear - glob:**.out_proj"), None, "peft-rejects"),
    ("wraps-head-suffix", head_suffix_model, lambda m: LoraConfig(target_modules=["attn_head.v"], modules_to_save=["head"]),
     "modules-to-save-wraps", None),
    ("wraps-selection", head_suffix_model, lambda m: select(m, "glob:attn_head.v"), None, "modules-to-save-wraps"),
    ("no-wrap-full-name", head_suffix_model, lambda m: LoraConfig(target_modules=["attn_head.v"], modules_to_save=["out"]),
     None, "modules-to-save-wraps"),
    ("tying-adds-lm-head", tied_llama, lambda m: LoraConfig(target_modules=["embed_tokens"], ensure_weight_tying=True),
     "peft-adds-targets", None),
    ("no-tying-no-extra", tied_llama, lambda m: LoraConfig(target_modules=["q_proj"]), None, "peft-adds-targets"),
    ("tokens", tied_llama, lambda m: LoraConfig(target_modules=["q_proj"], trainable_token_indices=[1, 2]),
     "trainable-tokens", None),
    ("param-and-module", lambda: tiny_moe("qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
     lambda m: LoraConfig(target_modules=["q_proj"], target_parameters=["q_proj.weight"]), "parameter-and-module-target", "peft-rejects"),
]


@pytest.mark.parametrize("case, build, target, present, absent", CASES, ids=[c[0] for c in CASES])
def test_peft_rule_fires_on_its_case_only(case, build, target, present, absent):
    model = build()
    found = codes(quiet(check, model, target(model)))
    if present:
        assert present in found, found
    if absent:
        assert absent not in found, found


@pytest.mark.parametrize("case, build, target, present", [
    ("mamba", mamba, lambda m: LoraConfig(target_modules=["in_proj", "out_proj"]), "peft-rejects"),
    ("param-and-module", CASES[-1][1], CASES[-1][2], "parameter-and-module-target"),
], ids=["mamba", "param-and-module"])
def test_rejecting_findings_are_what_peft_raises(case, build, target, present):
    """The claim "get_peft_model would raise" is checked against get_peft_model itself."""
    model = build()
    config = target(model)
    assert present in codes(quiet(check, model, config))
    with pytest.raises(ValueError):
        quiet(get_peft_model, build(), copy.deepcopy(config), low_cpu_mem_usage=True)


def test_rewrite_finding_names_the_lost_dense_mlp():
    model = deepseek()
    config = LoraConfig(target_modules=select(model, "linear").names())
    finding = next(f for f in quiet(check, model, config) if f.code == "peft-rewrites-targets")
    assert finding.severity == "error"
    assert "model.layers.0.mlp.gate_proj" in finding.modules
    assert finding.message.startswith("PEFT's transformers-5 MoE conversion rewrites target_modules for 'deepseek_v3'")
    # and PEFT really does leave the dense MLP without an adapter
    peft_model = quiet(get_peft_model, deepseek(), copy.deepcopy(config), low_cpu_mem_usage=True)
    assert "model.layers.0.mlp.gate_proj" not in models.wrapped_names(peft_model)


def test_modules_to_save_wraps_refuses_patch_with_a_config_error():
    model = head_suffix_model()
    with pytest.raises(ts.ModulesToSaveOverlapError, match=r"modules_to_save=\['head'\] \(PEFT matches its entries with a plain endswith") as info:
        quiet(ts.patch, LoraConfig(modules_to_save=["head"]), select(model, "glob:attn_head.v"))
    assert isinstance(info.value, ts.ConfigError)
    # strict=False cannot downgrade it: the adapter would not reload
    with pytest.raises(ts.ModulesToSaveOverlapError):
        quiet(ts.patch, LoraConfig(modules_to_save=["head"]), select(model, "glob:attn_head.v"), strict=False)


# ---------------------------------------------------------------------------- dry_run's contract


def test_verify_raises_peft_rejection_with_peft_words_and_pickles():
    with pytest.raises(PeftRejectionError, match=r"^get_peft_model would raise on this LoraConfig and MambaForCausalLM: ValueError: ") as info:
        verify(mamba(), LoraConfig(target_modules=["out_proj"]))
    assert "incompatible with Mamba" in info.value.peft_error
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.peft_error == info.value.peft_error


@pytest.mark.parametrize("model, config, error, match", [
    ("not a module", LoraConfig(target_modules=["q"]), ts.NotAModuleError, r"."),
    (None, {"target_modules": ["q"]}, ts.ConfigError, r"^dry_run\(\) needs a PEFT config object"),
    (None, "LoraConfig", ts.ConfigError, r"^dry_run\(\) needs a PEFT config object"),
], ids=["not-a-module", "dict-config", "string-config"])
def test_dry_run_bad_input(model, config, error, match):
    with pytest.raises(error, match=match):
        dry_run(model if model is not None else head_suffix_model(), config)


@pytest.mark.parametrize("config", [
    LoraConfig(target_modules=["attn_head.v"]),
    LoraConfig(target_modules=["attn_head.v"], modules_to_save=["head"]),
    LoraConfig(target_modules=["q"], modules_to_save=["out"]),
    TrainableTokensConfig(target_modules=["out"], token_indices=[0]),
], ids=["plain", "wrapped", "saved", "trainable-tokens-on-linear"])
def test_real_dry_run_leaves_the_model_alone(config):
    model = head_suffix_model()
    before = [(n, id(m), type(m)) for n, m in model.named_modules()]
    params = [(n, id(p), p.requires_grad) for n, p in model.named_parameters()]
    quiet(dry_run, model, config, real=True)
    assert [(n, id(m), type(m)) for n, m in model.named_modules()] == before
    assert [(n, id(p), p.requires_grad) for n, p in model.named_parameters()] == params


def test_real_reload_fails_where_the_wrapper_renames_the_adapter():
    model = head_suffix_model()
    wrapped = quiet(dry_run, model, LoraConfig(target_modules=["attn_head.v"], modules_to_save=["head"]), real=True)
    plain = quiet(dry_run, model, LoraConfig(target_modules=["attn_head.v"], modules_to_save=["attn_head.q"]), real=True)
    assert wrapped.modules == ("attn_head.v",) and wrapped.saved == ("attn_head",) and wrapped.reloads is False
    assert plain.modules == ("attn_head.v",) and plain.saved == ("attn_head.q",) and plain.reloads is True


@pytest.mark.parametrize("entry, raises", [("out", True), ("dropout", True), ("layer", False), ("attn_head.q", False), ("q", False)])
def test_regression_modules_to_save_entry_matching_adapter_internals(entry, raises):
    """_set_trainable runs after injection: `out` ends `lora_dropout` (PEFT raises), `layer` ends `base_layer` (PEFT skips it)."""
    model = head_suffix_model()
    config = LoraConfig(target_modules=["attn_head.v"], modules_to_save=[entry])
    fast, real = quiet(dry_run, model, config), quiet(dry_run, model, config, real=True)
    assert fast.same_outcome(real)
    assert (real.error is not None) == raises, real.error
    try:
        quiet(get_peft_model, head_suffix_model(), copy.deepcopy(config), low_cpu_mem_usage=True)
    except (TypeError, ValueError):
        assert raises
    else:
        assert not raises
