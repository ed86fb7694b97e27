"""Regression tests for the issue "Exact under a real get_peft_model".

The judge in every test is PEFT itself: `oracle.peft_adapts(make_model, config)` builds a *fresh*
model and runs a real `peft.get_peft_model(model, copy.deepcopy(config), low_cpu_mem_usage=True)` on
it, then reads which modules became tuner layers (parameter wrappers → parameters, modules-to-save
and trainable-token wrappers apart). No targetsel code takes part in judging: targetsel's
`verify()`, `dry_run()`, `to_peft()` and `patch()` are the things under test.

Each test is named after the regression it pins (`test_regression_<what>`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings

import pytest
import torch
from peft import AdaLoraConfig, IA3Config, LoraConfig, TrainableTokensConfig, get_peft_model
from torch import nn
from torch.nn.utils import parametrize

import models
from oracle import Adapted, OracleDisagreement, peft_adapts, roundtrip, structure
from targetsel import ConfigError, TargetselError, patch, select, verify
from targetsel.errors import PeftRejectionError
from targetsel.bridge.verify import dry_run

# ---------------------------------------------------------------------------- small models

TINY = dict(hidden_size=32, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, vocab_size=64)


def tiny_llama(tied: bool = True, layers: int = 2) -> nn.Module:
    return models.hf_model("llama", num_hidden_layers=layers, tie_word_embeddings=tied, **TINY)


def untied_llama() -> nn.Module:
    return tiny_llama(tied=False, layers=1)


def distilbert_seq_cls() -> nn.Module:
    """Has `pre_classifier` next to `classifier`: the first ends with the second, no dot between."""
    return models.hf_model(
        "distilbert", auto="AutoModelForSequenceClassification", n_layers=2, dim=32, hidden_dim=64, n_heads=4,
        vocab_size=64,
    )


MOE_SIZES = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=64, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=100)
MOE_ARCHS = {
    # layer 0 dense (its own gate_proj/up_proj/down_proj Linears), layer 1 fused experts
    "qwen3_moe": dict(num_experts=4, moe_intermediate_size=32, num_experts_per_tok=2, mlp_only_layers=[0]),
    "mixtral": dict(num_local_experts=4),
    # layer 0 dense, layer 1 fused experts plus Linear shared experts
    "deepseek_v3": dict(n_routed_experts=4, moe_intermediate_size=32, first_k_dense_replace=1, n_group=1, topk_group=1,
                        num_experts_per_tok=2, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8,
                        qk_nope_head_dim=8, v_head_dim=8),
}


def tiny_moe(arch: str) -> nn.Module:
    return models.hf_model(arch, **{**MOE_SIZES, **MOE_ARCHS[arch]})


def tiny_mamba2() -> nn.Module:
    return models.hf_model("mamba2", num_hidden_layers=2, hidden_size=64, num_heads=8, head_dim=16, n_groups=1,
                           state_size=16, vocab_size=100, expand=2)


class Identity(nn.Module):
    """A parametrization that changes nothing (only its presence matters to PEFT)."""

    def forward(self, x):
        return x


def odd_names(device: str = "meta") -> nn.Module:
    """Names that PEFT's string rules trip over.

    `attn_head` ends with `head` (modules_to_save matches with a plain endswith); `block.base_layer`
    is a module really named `base_layer` (PEFT strips `.base_layer` before matching
    target_parameters); `par` carries a torch parametrization (PEFT matches it by exact key only).
    """
    with torch.device(device):
        m = nn.Module()
        m.emb = nn.Embedding(16, 4)
        m.attn_head = nn.Module()
        m.attn_head.v = nn.Linear(4, 4)
        m.attn_head.k = nn.Linear(4, 4)
        m.block = nn.Module()
        m.block.base_layer = nn.Linear(4, 4)
        m.block.proj = nn.Linear(4, 4)
        m.par = nn.Linear(4, 4)
        parametrize.register_parametrization(m.par, "weight", Identity())
        m.body = nn.Linear(4, 4)
        m.head = nn.Linear(4, 16)
    return m


def odd_names_cpu() -> nn.Module:
    return odd_names("cpu")


# ---------------------------------------------------------------------------- judging helpers


def judge(make_model, config) -> Adapted:
    """PEFT's verdict on a fresh model (never a model targetsel has seen).

    The module tree is the ground truth. oracle.peft_adapts also cross-checks it with PEFT's
    `targeted_*_names` bookkeeping, which PEFT itself writes differently for a module really named
    `base_layer` (it books the stripped name): there the tree alone is read."""
    try:
        return peft_adapts(make_model, config)
    except OracleDisagreement:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = get_peft_model(make_model(), copy.deepcopy(config), low_cpu_mem_usage=True)
        texts = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
        return dataclasses.replace(structure(peft_model), warnings=texts)


def assert_exact_or_refused(make_model, config, sel, *, refusal=TargetselError):
    """`patch(config, sel)` either raises `refusal` or returns a config under which a real
    get_peft_model on a fresh model adapts exactly `sel.names()` — no more modules, no parameters
    the input config did not ask for. Returns the patched config or the raised error."""
    names = tuple(sel.names())
    try:
        new = patch(config, sel)
    except TargetselError as exc:
        _assert_truthful(make_model, config, sel, exc)
        if not isinstance(exc, refusal or ()):
            pytest.fail(f"patch() refused with {type(exc).__name__} (expected {_names(refusal)}"
                        f"{'' if refusal else ': PEFT can adapt this selection exactly'}): {exc}")
        return exc
    verdict = judge(make_model, new)
    assert verdict.error is None, f"patch() returned a config get_peft_model rejects: {verdict.error}"
    assert verdict.modules == names, (
        f"patch() returned target_modules={new.target_modules!r}, under which PEFT adapts "
        f"{verdict.describe()} instead of {list(names)}"
    )
    asked = tuple(getattr(config, "target_parameters", None) or ())
    assert not verdict.parameters or asked, f"PEFT also adapts parameters nobody asked for: {verdict.parameters}"
    return new


def _names(refusal) -> str:
    classes = refusal if isinstance(refusal, tuple) else (refusal,)
    return " or ".join(c.__name__ for c in classes) or "no refusal"


def _assert_truthful(make_model, config, sel, exc) -> None:
    """A refusal that says get_peft_model would raise must be right about it."""
    text = str(exc)
    if "get_peft_model would raise" in text or "get_peft_model raises" in text:
        verdict = judge(make_model, dataclasses.replace(copy.deepcopy(config), target_modules=sel.names()))
        assert verdict.error is not None, (
            f"the refusal claims get_peft_model would raise, but PEFT accepts target_modules={sel.names()!r} "
            f"and adapts {verdict.describe()}: {text}"
        )


def agrees_with(injection, verdict: Adapted) -> bool:
    """targetsel's Injection and PEFT's verdict: same raise-or-not, and the same four sets."""
    if (injection.error is None) != (verdict.error is None):
        return False
    if verdict.error is not None:
        return injection.error.split(":", 1)[0] == verdict.error.split(":", 1)[0]
    return (
        injection.modules == verdict.modules and injection.saved == verdict.saved and injection.tokens == verdict.tokens
        # parameters of one module are wrapped one inside another in no meaningful order
        and sorted(injection.parameters) == sorted(verdict.parameters)
    )


def show(injection) -> str:
    if injection.error:
        return f"error {injection.error[:160]}"
    return (f"modules={list(injection.modules)} parameters={list(injection.parameters)} "
            f"saved={list(injection.saved)} tokens={list(injection.tokens)}")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------- 1. modules_to_save suffix rule

# (a) task_type="SEQ_CLS" adds "classifier" and "score" to modules_to_save, and PEFT's _set_trainable
# wraps every module whose name ends with an entry: `pre_classifier` too.
@pytest.mark.parametrize("query", ["linear", "linear - glob:classifier"])
@pytest.mark.parametrize("strict", [True, False])
def test_regression_seq_cls_task_type_wraps_pre_classifier(query, strict):
    model = distilbert_seq_cls()
    sel = select(model, query)
    assert "pre_classifier" in sel.names()
    one_liner = judge(distilbert_seq_cls, LoraConfig(task_type="SEQ_CLS", target_modules=sel.names()))
    assert one_liner.error is not None  # PEFT: modules_to_save cannot be applied to a lora.Linear

    try:
        new = patch(LoraConfig(task_type="SEQ_CLS"), sel, strict=strict)
    except TargetselError as exc:
        text = str(exc)
        assert "modules_to_save" in text, text
        # it must name a selected module PEFT wraps for saving (classifier: exact entry, pre_classifier: endswith)
        wrapped = [n for n in ("classifier", "pre_classifier") if n in sel.names()]
        assert any(re.search(rf"(?<![\w.]){n}(?![\w])", text) for n in wrapped), f"the refusal names none of {wrapped}: {text}"
        return
    verdict = judge(distilbert_seq_cls, new)
    assert verdict.error is None, f"patch() returned a config get_peft_model rejects: {verdict.error}"
    expected = [n for n in sel.names() if n != "classifier"] if not strict else sel.names()
    assert verdict.modules == tuple(expected), verdict.describe()


def test_regression_seq_cls_verify_reports_peft_rejection():
    model = distilbert_seq_cls()
    names = select(model, "linear - glob:classifier").names()
    config = LoraConfig(task_type="SEQ_CLS", target_modules=names)
    verdict = judge(distilbert_seq_cls, config)
    for real in (False, True):
        with pytest.raises(PeftRejectionError) as caught:
            verify(model, config, real=real)
        assert caught.value.peft_error.split(":")[0] == verdict.error.split(":")[0]


def test_regression_modules_to_save_entry_is_a_suffix_of_a_targets_parent():
    """modules_to_save=["head"] wraps `attn_head` too (plain endswith), with the adapted `attn_head.v`
    inside it: the adapter then no longer reloads. patch() must refuse with a ConfigError naming
    modules_to_save."""
    model = odd_names()
    sel = select(model, "glob:attn_head.v")
    one_liner = LoraConfig(modules_to_save=["head"], target_modules=sel.names())
    verdict = judge(odd_names, one_liner)
    assert "attn_head" in verdict.saved  # PEFT wraps the target's parent for saving
    assert not roundtrip(odd_names_cpu, one_liner).ok  # and the saved adapter does not load back

    with pytest.raises(TargetselError) as caught:
        patch(LoraConfig(modules_to_save=["head"]), sel)
    assert "modules_to_save" in str(caught.value)
    assert isinstance(caught.value, ConfigError), (
        f"the refusal is a {type(caught.value).__name__} ({', '.join(c.__name__ for c in type(caught.value).__mro__[1:4])}), "
        "not a ConfigError: the config's modules_to_save field is what cannot be honoured"
    )


MODULES_TO_SAVE_AROUND_TARGETS = [
    ("suffix-entry", LoraConfig(modules_to_save=["head"], target_modules=["attn_head.v"])),
    ("underscore-entry", LoraConfig(modules_to_save=["_head"], target_modules=["v"])),
]


@pytest.mark.parametrize("case_id, config", MODULES_TO_SAVE_AROUND_TARGETS, ids=[c[0] for c in MODULES_TO_SAVE_AROUND_TARGETS])
def test_regression_modules_to_save_around_a_target_dry_run_names_what_peft_adapts(case_id, config):
    """dry_run must report an adapted module inside a ModulesToSaveWrapper under its base-model
    name, as PEFT's verdict does (not under the wrapper's internal `original_module` /
    `modules_to_save.default` paths)."""
    model = odd_names()
    verdict = judge(odd_names, config)
    for real in (False, True):
        got = dry_run(model, config, real=real)
        assert agrees_with(got, verdict), f"dry_run(real={real}): {show(got)}; PEFT: {verdict.describe()}"


@pytest.mark.parametrize("case_id, config", MODULES_TO_SAVE_AROUND_TARGETS, ids=[c[0] for c in MODULES_TO_SAVE_AROUND_TARGETS])
def test_regression_modules_to_save_around_a_target_reload_claim(case_id, config):
    """dry_run(real=True).reloads must match what PEFT's own save_pretrained + PeftModel.from_pretrained do."""
    back = roundtrip(odd_names_cpu, config)
    got = dry_run(odd_names(), config, real=True)
    assert got.reloads == back.ok, f"dry_run says reloads={got.reloads}; PEFT's save + reload: {back.describe()}"


# ---------------------------------------------------------------------------- 2. ensure_weight_tying


@pytest.mark.parametrize("targets", [["embed_tokens"], ["model.embed_tokens"]])
def test_regression_ensure_weight_tying_verify_reports_tied_partner(targets):
    model = tiny_llama(tied=True)
    config = LoraConfig(ensure_weight_tying=True, target_modules=targets)
    verdict = judge(tiny_llama, config)
    assert verdict.modules == ("model.embed_tokens", "lm_head")
    for real in (False, True):
        assert verify(model, config, real=real) == list(verdict.modules)
        assert agrees_with(dry_run(model, config, real=real), verdict)


def test_regression_ensure_weight_tying_patch_never_claims_a_set_peft_changes():
    model = tiny_llama(tied=True)
    sel = select(model, "glob:model.embed_tokens")
    assert_exact_or_refused(tiny_llama, LoraConfig(ensure_weight_tying=True), sel)
    both = select(model, "glob:model.embed_tokens | glob:lm_head")
    new = assert_exact_or_refused(tiny_llama, LoraConfig(ensure_weight_tying=True), both, refusal=())
    assert new.ensure_weight_tying is True


def test_regression_ensure_weight_tying_is_not_dodged_by_a_regex():
    """With ensure_weight_tying=True PEFT adapts a tied embedding *and* its tied head. No target
    form adapts the embedding alone while keeping the tying: patch() must refuse (naming
    ensure_weight_tying), not pick a form under which PEFT warns that it could not tie anything."""
    model = tiny_llama(tied=True)
    sel = select(model, "glob:model.embed_tokens")
    try:
        new = patch(LoraConfig(ensure_weight_tying=True), sel)
    except ConfigError as exc:
        assert "ensure_weight_tying" in str(exc)
        return
    verdict = judge(tiny_llama, new)
    ignored = [w for w in verdict.warnings if "ensure_weight_tying" in w]
    assert not ignored, (
        f"patch() returned target_modules={new.target_modules!r} with ensure_weight_tying=True; PEFT adapts "
        f"{verdict.describe()} and warns: {ignored[0]}"
    )


# ---------------------------------------------------------------------------- 3. layer_replication


def _origins(make_model, config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adapted names, the pre-replication module each adapted module is a copy of).

    Every module is tagged with its name before get_peft_model; PEFT's replicate_layers deep-copies
    layers, so a copy carries its original's tag."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = make_model()
    for name, module in model.named_modules():
        module._exactness_origin = name
    peft_model = quiet(get_peft_model, model, copy.deepcopy(config), low_cpu_mem_usage=True)
    adapted = structure(peft_model).modules
    base = peft_model.base_model.model
    origins = []
    for name in adapted:
        module = base.get_submodule(name)
        while isinstance(module, BaseTunerLayer):
            module = module.base_layer
        origins.append(module._exactness_origin)
    return adapted, tuple(origins)


def test_regression_layer_replication_verify_includes_the_copies():
    model = tiny_llama()
    config = LoraConfig(layer_replication=[[0, 2], [1, 2]], target_modules=["q_proj"])
    verdict = judge(tiny_llama, config)
    assert "model.layers.2.self_attn.q_proj" in verdict.modules  # the copy of layer 1
    for real in (False, True):
        assert verify(model, config, real=real) == list(verdict.modules)


# (layer_replication, query): the replicated stack is [0, 1, 1], [1, 0] and [0, 0, 1]
REPLICATIONS = [
    ([[0, 2], [1, 2]], "glob:**.q_proj"),
    ([[0, 2], [1, 2]], "glob:model.layers.1.self_attn.q_proj"),
    ([[1, 2], [0, 1]], "glob:model.layers.0.self_attn.q_proj"),
    ([[1, 2], [0, 1]], "linear & layers:1"),
    ([[0, 1], [0, 2]], "glob:model.layers.1.self_attn.v_proj"),
]


@pytest.mark.parametrize("replication, query", REPLICATIONS, ids=[f"{r}-{q}" for r, q in REPLICATIONS])
def test_regression_layer_replication_patch_adapts_the_selected_modules(replication, query):
    """After replication a name can belong to a copy of another layer: adapting the right *name*
    is not enough, the adapted modules must be (copies of) the selected ones."""
    model = tiny_llama()
    sel = select(model, query)
    try:
        new = patch(LoraConfig(layer_replication=replication), sel)
    except ConfigError as exc:
        assert "layer_replication" in str(exc)
        return
    adapted, origins = _origins(tiny_llama, new)
    assert set(origins) == set(sel.names()), (
        f"patch() returned target_modules={new.target_modules!r}; with layer_replication={replication} PEFT adapts "
        f"{list(adapted)}, copies of {list(origins)}, not the selected {sel.names()}"
    )


# ---------------------------------------------------------------------------- 4. trainable_token_indices

TOKEN_CONFIGS = [
    ("lora-list", lambda: LoraConfig(target_modules=["q_proj"], trainable_token_indices=[0, 3])),
    ("lora-embed", lambda: LoraConfig(target_modules=["q_proj"], trainable_token_indices={"embed_tokens": [0, 3]})),
    ("lora-head", lambda: LoraConfig(target_modules=["q_proj"], trainable_token_indices={"lm_head": [1]})),
    ("trainable-tokens-method", lambda: TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[0, 3])),
]


def _token_layers(make_model, config) -> tuple[str, ...]:
    """Embeddings PEFT gave a TrainableTokensLayer (standalone or inside a wrapper), read off the tree.
    (oracle.peft_adapts's bookkeeping check does not know PEFT's tied TrainableTokensLayer on lm_head.)"""
    peft_model = quiet(get_peft_model, make_model(), copy.deepcopy(config), low_cpu_mem_usage=True)
    return structure(peft_model).tokens


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("case_id, build", TOKEN_CONFIGS, ids=[c[0] for c in TOKEN_CONFIGS])
def test_regression_trainable_tokens_are_reported(case_id, build, tied):
    make = (lambda: tiny_llama(tied=True, layers=1)) if tied else untied_llama
    model = make()
    config = build()
    tokens = _token_layers(make, config)
    assert tokens and tokens[0] == "model.embed_tokens" or case_id == "lora-head"
    for real in (False, True):
        got = dry_run(model, config, real=real)
        assert got.error is None, got.error
        assert got.tokens == tokens, f"dry_run(real={real}).tokens = {got.tokens}; PEFT put TrainableTokensLayer on {tokens}"
        assert not set(got.modules) & set(tokens), f"{got.modules} reports token layers as adapted modules"


# ---------------------------------------------------------------------------- 5. AdaLoRA ranks


@pytest.mark.parametrize("kwargs", [dict(ranks={"glob:**.q_proj": 4}), dict(ranks={"layers:0": 16})])
def test_regression_adalora_refuses_ranks(kwargs):
    model = tiny_llama()
    sel = select(model, "linear & glob:**.self_attn.*")
    config = AdaLoraConfig(total_step=10, init_r=8)
    before = config.to_dict()
    with pytest.raises(ConfigError, match=r"AdaLoRA"):
        patch(config, sel, **kwargs)
    assert config.to_dict() == before
    # what the refusal protects from: PEFT ignores a hand-written AdaLoRA rank_pattern at injection
    # (every module starts at init_r) and save_pretrained then crashes on it
    cpu = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    peft_model = quiet(get_peft_model, cpu, AdaLoraConfig(total_step=10, init_r=8, target_modules=["0", "2"],
                                                          rank_pattern={"0": 2}))
    assert peft_model.base_model.model[0].lora_A["default"].shape[0] == 8
    import tempfile

    with tempfile.TemporaryDirectory() as folder, pytest.raises(Exception):
        peft_model.save_pretrained(folder)


def test_regression_adalora_without_ranks_is_exact():
    model = tiny_llama()
    sel = select(model, "linear & glob:**.self_attn.*")
    assert_exact_or_refused(tiny_llama, AdaLoraConfig(total_step=10), sel, refusal=())


# ---------------------------------------------------------------------------- 6. parameter + module on one module

PARAM_ON_MODULE = [
    ("every-q-weight", "glob:**.q_proj", "weight$"),
    ("one-q-weight", "glob:model.layers.0.self_attn.q_proj", "weight"),
]


@pytest.mark.parametrize("order", ["modules-first", "parameters-first"])
@pytest.mark.parametrize("case_id, query, pattern", PARAM_ON_MODULE, ids=[c[0] for c in PARAM_ON_MODULE])
def test_regression_parameter_and_module_selection_on_one_module(case_id, query, pattern, order):
    model = tiny_llama()
    msel = select(model, "linear & glob:**.self_attn.*")
    psel = select(model, query).parameters(pattern)
    first, second = (msel, psel) if order == "modules-first" else (psel, msel)
    try:
        new = patch(patch(LoraConfig(), first), second)
    except TargetselError:
        return
    verdict = judge(tiny_llama, new)
    pytest.fail(f"patch() returned target_modules={new.target_modules!r}, target_parameters={new.target_parameters!r}; "
                f"PEFT: {verdict.describe()}")


def test_regression_parameter_and_module_selection_on_different_modules_is_exact():
    model = tiny_llama()
    msel = select(model, "linear & glob:**.self_attn.*")
    psel = select(model, "glob:**.mlp.up_proj").parameters("weight$")
    new = patch(patch(LoraConfig(), msel), psel)
    verdict = judge(tiny_llama, new)
    assert verdict.modules == tuple(msel.names()) and verdict.parameters == tuple(psel.names()), verdict.describe()


# ---------------------------------------------------------------------------- 7. target_parameters rules

PARAMETER_CASES = [
    ("module-named-base_layer", "glob:block.base_layer", "weight"),
    ("base_layer-and-sibling", "glob:block.*", "weight"),
    ("parametrized-weight", "glob:par", "weight"),
    ("parametrized-original", "glob:par", "original"),
    ("plain", "glob:body", "weight"),
]


@pytest.mark.parametrize("case_id, query, pattern", PARAMETER_CASES, ids=[c[0] for c in PARAMETER_CASES])
def test_regression_target_parameters_exact_or_refused(case_id, query, pattern):
    """Exact means: PEFT wraps the selected parameters and nothing else, and the adapted model
    still runs (a ParamWrapper in place of a ParametrizationList breaks the forward)."""
    model = odd_names()
    psel = select(model, query).parameters(pattern)
    names = psel.names()
    assert names
    try:
        new = patch(LoraConfig(), psel)
    except TargetselError:
        return
    verdict = judge(odd_names, new)
    assert verdict.error is None, verdict.error
    assert not verdict.modules
    # PEFT names a parametrized weight by the module's own key (`par.weight`); the selection names its storage
    storage = {"par.weight": "par.parametrizations.weight.original"}
    assert tuple(storage.get(p, p) for p in verdict.parameters) == tuple(names), (
        f"target_parameters={new.target_parameters!r}: PEFT adapts {verdict.parameters}, selected {names}"
    )
    peft_model = quiet(get_peft_model, odd_names_cpu(), copy.deepcopy(new))
    base = peft_model.base_model.model
    try:
        for child in ("par", "body", "block.base_layer", "block.proj"):
            base.get_submodule(child)(torch.randn(2, 4))
    except Exception as exc:
        pytest.fail(f"patch() returned target_parameters={new.target_parameters!r}; the adapted model's forward "
                    f"through {child!r} raises {type(exc).__name__}: {exc}")


def test_regression_target_parameters_base_layer_over_match_is_refused_or_exact():
    """`y.block.base_layer.weight` is matched by PEFT as `y.block.weight`, so the suffix
    `block.weight` chosen for `x.block.weight` would catch it too."""

    def make(device="meta"):
        with torch.device(device):
            m = nn.Module()
            m.x = nn.Module()
            m.x.block = nn.Linear(4, 4)
            m.y = nn.Module()
            m.y.block = nn.Module()
            m.y.block.base_layer = nn.Linear(4, 4)
        return m

    model = make()
    psel = select(model, "glob:x.block").parameters("weight")
    try:
        new = patch(LoraConfig(), psel)
    except TargetselError:
        return
    verdict = judge(make, new)
    assert verdict.parameters == tuple(psel.names()), verdict.describe()


# ---------------------------------------------------------------------------- 9. layers_to_transform beside a regex


def four_layer_llama() -> nn.Module:
    return tiny_llama(tied=False, layers=4)


def test_regression_layers_to_transform_skips_the_regex_form():
    model = four_layer_llama()
    sel = select(model, "glob:**.self_attn.{q,k,v}_proj & layers:0..1")
    assert isinstance(sel.to_peft("auto", check_peft=False), str)  # the shortest form is a regex
    for config in (LoraConfig(layers_to_transform=[0, 1]), LoraConfig(layers_to_transform=[0, 1], layers_pattern="layers"),
                   LoraConfig(layers_to_transform=[0, 1, 2, 3])):
        new = assert_exact_or_refused(four_layer_llama, config, sel, refusal=())
        assert new.layers_to_transform == config.layers_to_transform


def test_regression_layers_to_transform_with_harmful_exclude_names_exclude_modules():
    model = four_layer_llama()
    sel = select(model, "glob:**.self_attn.{q,k,v}_proj & layers:0..1")
    config = LoraConfig(layers_to_transform=[0, 1], exclude_modules=["k_proj"])
    with pytest.raises(ConfigError, match=r"exclude_modules") as caught:
        patch(config, sel)
    assert "layers_to_transform" not in str(caught.value).split("which changes")[0]


# ---------------------------------------------------------------------------- MoE conversion

# (arch, query) whose plain list of full names PEFT's transformers-5 conversion rewrites
MOE_REWRITTEN = [
    ("qwen3_moe", "linear"),
    ("qwen3_moe", "linear & glob:**.mlp.*"),
    ("qwen3_moe", "glob:**.{gate,up}_proj"),
    ("qwen3_moe", "glob:**.mlp.gate"),
    ("mixtral", "glob:**.mlp.gate"),
    ("deepseek_v3", "linear"),
    ("deepseek_v3", "linear & glob:**.mlp.**"),
]
MOE_IDS = [f"{a}-{q}" for a, q in MOE_REWRITTEN]


def _moe_factory(arch):
    return lambda: tiny_moe(arch)


@pytest.mark.parametrize("arch, query", MOE_REWRITTEN, ids=MOE_IDS)
def test_regression_moe_one_liner_verify_reports_what_peft_adapts(arch, query):
    make = _moe_factory(arch)
    model = make()
    names = select(model, query).names()
    config = LoraConfig(target_modules=names)
    verdict = judge(make, config)
    assert verdict.error is None and (verdict.modules, verdict.parameters) != (tuple(names), ())  # PEFT rewrites it
    for real in (False, True):
        assert verify(model, config, real=real) == list(verdict.modules)
        got = dry_run(model, config, real=real)
        assert agrees_with(got, verdict), f"dry_run(real={real}): {show(got)}; PEFT: {verdict.describe()}"


@pytest.mark.parametrize("arch, query", MOE_REWRITTEN, ids=MOE_IDS)
def test_regression_moe_to_peft_list_says_what_peft_does_instead(arch, query):
    sel = select(tiny_moe(arch), query)
    with pytest.raises(ConfigError, match=r"rewrites|target_parameters|fused") as caught:
        sel.to_peft("list")
    assert "target_parameters" in str(caught.value) or "get_peft_model raises" in str(caught.value)


MOE_PATCH = MOE_REWRITTEN + [("mixtral", "linear"), ("qwen3_moe", "linear & glob:**.self_attn.*"),
                             ("deepseek_v3", "linear & glob:**.self_attn.*")]


@pytest.mark.parametrize("arch, query", MOE_PATCH, ids=[f"{a}-{q}" for a, q in MOE_PATCH])
def test_regression_moe_patch_exact_or_config_error(arch, query):
    make = _moe_factory(arch)
    model = make()
    assert_exact_or_refused(make, LoraConfig(), select(model, query), refusal=ConfigError)


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_regression_moe_gate_proj_without_up_proj_is_refused(arch):
    make = _moe_factory(arch)
    model = make()
    sel = select(model, "glob:**.gate_proj")
    assert sel.names()
    one_liner = LoraConfig(target_modules=sel.names())
    verdict = judge(make, one_liner)
    assert verdict.error and "Cannot convert PEFT target" in verdict.error
    with pytest.raises(PeftRejectionError, match=r"Cannot convert PEFT target"):
        verify(model, one_liner)
    try:
        patch(LoraConfig(), sel)
    except ConfigError as exc:
        assert "gate_proj" in str(exc)
    except ValueError as exc:  # a bare ValueError from PEFT is exactly the regression
        pytest.fail(f"patch() let PEFT's {type(exc).__name__} through: {exc}")
    else:
        pytest.fail("patch() returned a config although every form makes get_peft_model raise")


def test_regression_mamba2_out_proj_is_refused_with_advice():
    model = tiny_mamba2()
    sel = select(model).linear()
    assert judge(tiny_mamba2, LoraConfig(target_modules=sel.names())).error
    with pytest.raises(TargetselError, match=r"out_proj") as caught:
        patch(LoraConfig(), sel)
    assert re.search(r"(leave|remove|drop).{0,40}out|- glob:\*\*\.out_proj", str(caught.value), re.IGNORECASE), str(caught.value)


def test_regression_mamba2_without_out_proj_is_exact():
    model = tiny_mamba2()
    sel = select(model).linear() - select(model).glob("**.out_proj")
    assert_exact_or_refused(tiny_mamba2, LoraConfig(), sel, refusal=())


# ---------------------------------------------------------------------------- property table

# (model id, factory) and, per model, configs with the exotic fields
PROPERTY_MODELS = {
    "llama-tied": lambda: tiny_llama(tied=True),
    "distilbert-seq-cls": distilbert_seq_cls,
    "odd-names": odd_names,
    "qwen3-moe": lambda: tiny_moe("qwen3_moe"),
}

PROPERTY_CONFIGS = {
    "llama-tied": [
        ("plain", lambda: LoraConfig(target_modules=["q_proj", "v_proj"])),
        ("exclude-list", lambda: LoraConfig(target_modules=["q_proj", "v_proj"], exclude_modules=["model.layers.0.self_attn.v_proj"])),
        ("exclude-regex", lambda: LoraConfig(target_modules=["q_proj"], exclude_modules=r".*layers\.1.*")),
        ("exclude-everything", lambda: LoraConfig(target_modules=["q_proj"], exclude_modules=["q_proj"])),
        ("layers-to-transform", lambda: LoraConfig(target_modules=["q_proj"], layers_to_transform=[1])),
        ("layers-pattern", lambda: LoraConfig(target_modules=["q_proj"], layers_to_transform=[0], layers_pattern="layers")),
        ("save-head", lambda: LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"])),
        ("save-tied-embedding", lambda: LoraConfig(target_modules=["q_proj"], modules_to_save=["embed_tokens"])),
        ("save-overlaps-target", lambda: LoraConfig(target_modules=["q_proj", "v_proj"], modules_to_save=["v_proj"])),
        ("tying-target", lambda: LoraConfig(target_modules=["embed_tokens"], ensure_weight_tying=True)),
        ("tying-saved", lambda: LoraConfig(target_modules=["q_proj"], modules_to_save=["embed_tokens"], ensure_weight_tying=True)),
        ("replication", lambda: LoraConfig(target_modules=["q_proj"], layer_replication=[[0, 2], [1, 2]])),
        ("tokens", lambda: LoraConfig(target_modules=["q_proj"], trainable_token_indices=[0, 1])),
        ("task-causal-lm", lambda: LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj"])),
        ("all-linear", lambda: LoraConfig(target_modules="all-linear")),
        ("default-targets", lambda: LoraConfig()),
        ("no-match", lambda: LoraConfig(target_modules=["nothing_here"])),
        ("unsupported-norm", lambda: LoraConfig(target_modules=["model.norm"])),
        ("ia3", lambda: IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"])),
        ("target-parameters", lambda: LoraConfig(target_modules=[], target_parameters=["q_proj.weight"])),
    ],
    "distilbert-seq-cls": [
        ("seq-cls", lambda: LoraConfig(task_type="SEQ_CLS", target_modules=["q_lin", "v_lin"])),
        ("seq-cls-pre-classifier", lambda: LoraConfig(task_type="SEQ_CLS", target_modules=["q_lin", "pre_classifier"])),
        ("token-cls", lambda: LoraConfig(task_type="TOKEN_CLS", target_modules=["lin1"])),
        ("question-ans", lambda: LoraConfig(task_type="QUESTION_ANS", target_modules=["q_lin"])),
        ("seq-cls-save-extra", lambda: LoraConfig(task_type="SEQ_CLS", target_modules=["k_lin"], modules_to_save=["pre_classifier"])),
        ("layers-pattern", lambda: LoraConfig(target_modules=["lin1"], layers_to_transform=[0], layers_pattern="layer")),
        ("replication-unsupported", lambda: LoraConfig(target_modules=["q_lin"], layer_replication=[[0, 2]])),
        ("tokens", lambda: LoraConfig(target_modules=["q_lin"], trainable_token_indices={"word_embeddings": [0, 1]})),
    ],
    "odd-names": [
        ("save-head-suffix", lambda: LoraConfig(target_modules=["attn_head.v"], modules_to_save=["head"])),
        ("save-parent", lambda: LoraConfig(target_modules=["v"], modules_to_save=["attn_head"])),
        ("save-apart", lambda: LoraConfig(target_modules=["body"], modules_to_save=["head"])),
        ("bare-module", lambda: LoraConfig(target_modules=["attn_head"])),
        ("base-layer-module", lambda: LoraConfig(target_modules=["block.base_layer"])),
        ("params-plain", lambda: LoraConfig(target_modules=[], target_parameters=["body.weight"])),
        ("params-base-layer", lambda: LoraConfig(target_modules=[], target_parameters=["base_layer.weight"])),
        ("params-parametrized-key", lambda: LoraConfig(target_modules=[], target_parameters=["par.weight"])),
        ("params-parametrized-suffix", lambda: LoraConfig(target_modules=[], target_parameters=["weight"])),
        ("tokens", lambda: LoraConfig(target_modules=["body"], trainable_token_indices={"emb": [0, 2]})),
        ("exclude-str", lambda: LoraConfig(target_modules=["v", "k", "body"], exclude_modules=r"attn_head\.k")),
    ],
    "qwen3-moe": [
        ("attention", lambda: LoraConfig(target_modules=["q_proj", "o_proj"])),
        ("fused", lambda: LoraConfig(target_modules=[], target_parameters=["gate_up_proj"])),
        ("converted", lambda: LoraConfig(target_modules=["gate_proj", "up_proj", "down_proj"])),
        ("converted-partial", lambda: LoraConfig(target_modules=["gate_proj"])),
        ("both", lambda: LoraConfig(target_modules=["q_proj"], target_parameters=["experts.down_proj"])),
        ("all-linear", lambda: LoraConfig(target_modules="all-linear")),
        ("save-router", lambda: LoraConfig(target_modules=["q_proj"], modules_to_save=["gate"])),
    ],
}

PROPERTY_CASES = [(m, c, build) for m, cases in PROPERTY_CONFIGS.items() for c, build in cases]
HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def snapshot(model: nn.Module, config) -> dict:
    """Everything get_peft_model would change on a model: tree, identities, grad flags, config, hooks."""
    tree = [
        (name, id(module), type(module), module.training, tuple(module.__dict__),
         tuple((k, id(v)) for k, v in module._modules.items()),
         tuple((k, id(v)) for k, v in module._parameters.items()),
         tuple((k, id(v)) for k, v in module._buffers.items()),
         tuple((table, tuple(getattr(module, table, {}))) for table in HOOK_TABLES))
        for name, module in model.named_modules(remove_duplicate=False)
    ]
    params = [(n, id(p), p.requires_grad, p.device.type, tuple(p.shape), p.dtype)
              for n, p in model.named_parameters(remove_duplicate=False)]
    model_config = getattr(model, "config", None)
    return {
        "tree": tree, "params": params,
        "model_config": model_config.to_dict() if hasattr(model_config, "to_dict") else None,
        "model_config_id": id(model_config),
        "peft_config": repr(config.to_dict()),
    }


@pytest.mark.parametrize("model_id, case_id, build", PROPERTY_CASES, ids=[f"{m}-{c}" for m, c, _ in PROPERTY_CASES])
def test_regression_dry_run_fast_real_and_peft_agree_without_touching_the_model(model_id, case_id, build):
    make = PROPERTY_MODELS[model_id]
    model = make()
    config = build()
    before = snapshot(model, config)
    fast = dry_run(model, config)
    real = dry_run(model, config, real=True)
    after = snapshot(model, config)
    for key in before:
        assert before[key] == after[key], f"dry_run changed the user's {key}"
    verdict = judge(make, config)
    assert fast.same_outcome(real), f"fast path: {show(fast)}; real injection: {show(real)}"
    assert agrees_with(real, verdict), f"dry_run(real=True): {show(real)}; PEFT: {verdict.describe()}"
    assert agrees_with(fast, verdict), f"dry_run(): {show(fast)}; PEFT: {verdict.describe()}"
    if verdict.error is None:
        assert verify(model, config) == list(verdict.modules)
    else:
        with pytest.raises(PeftRejectionError):
            verify(model, config)
    assert snapshot(model, config) == before
