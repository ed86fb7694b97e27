"""After `get_peft_model`: audit() compares adapted modules *and* parameters with what was selected,
selections made before injection refuse to answer for the rewritten tree, `resolved()` snapshots,
and the index lists exactly the modules `named_modules()` — and so PEFT — sees.

Every case runs a real `get_peft_model(..., low_cpu_mem_usage=True)` on models built on the meta
device: transformers-5 mixture-of-experts models (fused `mlp.experts.gate_up_proj` / `down_proj`
parameters, adapted through `target_parameters` as chains of `lora.ParamWrapper`) and small trees.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings

import pytest
import torch
from peft import LoraConfig, TrainableTokensConfig, get_peft_model
from torch import nn

import models
import targetsel as ts
from targetsel import Resolved, audit, patch, select
from targetsel.bridge.audit import wrapped_modules, wrapped_parameters
from targetsel.model.index import build_index

SIZES = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=100)
MOE = {
    "qwen3_moe": dict(num_experts=4, moe_intermediate_size=32),
    "mixtral": dict(num_local_experts=4),
}
ATTN = "linear & glob:**.self_attn.{q,v}_proj"
EXPERTS = "glob:**.mlp.experts"


def tiny_moe(arch: str) -> nn.Module:
    """A transformers-5 MoE model from its config class (Qwen3MoeConfig, MixtralConfig), tiny, on meta."""
    return models.hf_model(arch, **SIZES, **MOE[arch])


def inject(model, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config, low_cpu_mem_usage=True)


def layers(*names: str) -> tuple[str, ...]:
    """`model.layers.{0,1}.<name>` for each name, model order."""
    return tuple(f"model.layers.{i}.{n}" for i in (0, 1) for n in names)


# ---------------------------------------------------------------------------- audit: modules and parameters

OK = ((), (), (), ())

# (id, arch, module query or None, (parameter query, regex) or None, the config after patching the
#  selections: target_modules / target_parameters edited by hand (None: as patched),
#  expected (missing, unexpected, missing parameters, unexpected parameters))
AUDITS = [
    ("qwen3-modules-and-one-parameter", "qwen3_moe", ATTN, (EXPERTS, "gate_up"), None, None, OK),
    ("mixtral-two-parameters-per-module-a-wrapper-chain", "mixtral", ATTN, (EXPERTS, None), None, None, OK),
    ("qwen3-parameters-only", "qwen3_moe", None, (EXPERTS, "down_proj"), None, None, OK),
    ("qwen3-a-parameter-left-out-of-the-config", "qwen3_moe", None, (EXPERTS, None), None, ["gate_up_proj"],
     ((), (), layers("mlp.experts.down_proj"), ())),
    ("mixtral-parameters-nobody-selected", "mixtral", ATTN, None, None, ["down_proj"],
     ((), (), (), layers("mlp.experts.down_proj"))),
    ("qwen3-layer-0-selected-every-layer-adapted", "qwen3_moe", None, (f"{EXPERTS} & layers:0", "gate_up"), None,
     ["gate_up_proj"], ((), (), (), ("model.layers.1.mlp.experts.gate_up_proj",))),
    ("mixtral-a-module-missing-another-unexpected", "mixtral", ATTN, (EXPERTS, "gate_up"), ["q_proj", "k_proj"],
     None, (layers("self_attn.v_proj"), layers("self_attn.k_proj"), (), ())),
]

# How what was selected reaches audit(): taken before get_peft_model, each in its own form.
REFERENCES = {
    "selections": lambda sel, psel: (sel, psel),
    "resolved-snapshots": lambda sel, psel: (sel and sel.resolved(), psel and psel.resolved()),
    "names": lambda sel, psel: (sel and sel.names(), psel and psel.names()),
}


def _config(sel, psel, modules=None, parameters=None) -> LoraConfig:
    """patch() with the selections, then the targets edited by hand (the mistakes audit is for)."""
    config = LoraConfig(r=2)
    for selection in (sel, psel):
        if selection is not None:
            config = patch(config, selection)
    if modules is not None:
        config = dataclasses.replace(config, target_modules=modules)
    if parameters is not None:
        config = dataclasses.replace(config, target_parameters=parameters)
    return config


@pytest.mark.parametrize("reference", list(REFERENCES))
@pytest.mark.parametrize("case, arch, query, params, modules, parameters, expected", AUDITS, ids=[a[0] for a in AUDITS])
def test_audit_compares_modules_and_parameters(case, arch, query, params, modules, parameters, expected, reference):
    model = tiny_moe(arch)
    sel = select(model, query) if query else None
    psel = select(model, params[0]).parameters(params[1]) if params else None
    config = _config(sel, psel, modules, parameters)
    selected, selected_params = REFERENCES[reference](sel, psel)
    peft_model = inject(model, config)
    result = audit(peft_model, selected, parameters=selected_params)
    assert (result.missing, result.unexpected, result.missing_parameters, result.unexpected_parameters) == expected
    assert result.ok == (expected == OK) == bool(result)
    # what PEFT itself records as targeted, by module and by parameter
    assert sorted(result.wrapped) == sorted(peft_model.base_model.targeted_module_names)
    assert sorted(result.wrapped_parameters) == sorted(peft_model.base_model.targeted_parameter_names)


def test_readme_flow_patch_get_peft_model_audit():
    """The README's flow, with both kinds of targets; `audit` imported only after patch() ran."""
    model = tiny_moe("qwen3_moe")
    sel = select(model, ATTN)
    psel = select(model, EXPERTS).parameters("gate_up_proj|down_proj")
    peft_model = inject(model, patch(patch(LoraConfig(r=4), sel), psel))
    from targetsel import audit as audit_after_patch

    result = audit_after_patch(peft_model, sel, parameters=psel)
    assert str(result) == "audit ok: PEFT wrapped exactly the 4 selected module(s) and the 4 selected parameter(s)"
    assert result.wrapped_parameters == layers("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
    with pytest.raises(ts.ModelRewrittenError, match=r"^the model of selection 'glob:\*\*\.mlp\.experts' "):
        psel.names()  # evaluated now it would answer for the wrapper chain: it says so instead


def test_audit_of_a_parameter_selection_alone():
    model = tiny_moe("mixtral")
    psel = select(model, EXPERTS).parameters("down_proj")
    peft_model = inject(model, patch(LoraConfig(r=2), psel))
    result = audit(peft_model, psel)
    assert result.ok and result.expected == () and result.expected_parameters == layers("mlp.experts.down_proj")
    assert str(result) == "audit ok: PEFT wrapped exactly the 2 selected parameter(s)"


AUDIT_TEXTS = [
    ("modules-only", ATTN, None, ["q_proj"], None,
     "audit FAILED: PEFT wrapped 2 module(s); 4 were selected\n"
     "  missing (2, selected but not wrapped): model.layers.{0,1}.self_attn.v_proj (2)"),
    ("parameters-unexpected", ATTN, None, None, ["gate_up_proj"],
     "audit FAILED: PEFT wrapped 4 module(s) and 2 parameter(s); 4 module(s) and 0 parameter(s) were selected\n"
     "  unexpected parameters (2, wrapped but not selected): model.layers.{0,1}.mlp.experts.gate_up_proj (2)"),
    ("parameters-missing", None, (EXPERTS, None), None, ["down_proj"],
     "audit FAILED: PEFT wrapped 2 parameter(s); 4 were selected\n"
     "  missing parameters (2, selected but not wrapped): model.layers.{0,1}.mlp.experts.gate_up_proj (2)"),
]


@pytest.mark.parametrize("case, query, params, modules, parameters, text", AUDIT_TEXTS, ids=[a[0] for a in AUDIT_TEXTS])
def test_audit_text(case, query, params, modules, parameters, text):
    model = tiny_moe("qwen3_moe")
    sel = select(model, query) if query else None
    psel = select(model, params[0]).parameters(params[1]) if params else None
    peft_model = inject(model, _config(sel, psel, modules, parameters))
    if sel is None:
        assert str(audit(peft_model, psel)) == text
    else:
        assert str(audit(peft_model, sel, parameters=psel)) == text


class _Gate(nn.Module):
    """Its own 2-D parameter and a child Linear: both can be adapted, the Linear then moves under `base_layer`."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(8, 8))
        self.proj = nn.Linear(8, 8)


def test_regression_module_under_a_parameter_wrapper_is_found():
    # PEFT wraps `gate` in a ParamWrapper after wrapping `gate.proj`, which then sits at
    # `gate.base_layer.proj`: it is still the target `gate.proj` (PEFT strips `.base_layer` too).
    with torch.device("meta"):
        model = nn.Module()
        model.gate = _Gate()
        model.other = nn.Linear(8, 8)
    sel, psel = select(model, "glob:gate.proj").resolved(), select(model, "glob:gate").parameters("scale").resolved()
    peft_model = inject(model, LoraConfig(r=2, target_modules=["gate.proj"], target_parameters=["gate.scale"]))
    assert "gate.base_layer.proj" in dict(peft_model.base_model.model.named_modules())
    assert (wrapped_modules(peft_model), wrapped_parameters(peft_model)) == (["gate.proj"], ["gate.scale"])
    assert audit(peft_model, sel, parameters=psel).ok


def test_a_module_the_model_itself_calls_base_layer_keeps_its_name():
    with torch.device("meta"):
        model = nn.Module()
        model.block = nn.Module()
        model.block.base_layer = nn.Module()
        model.block.base_layer.q = nn.Linear(4, 4)
        model.block.k = nn.Linear(4, 4)
    sel = select(model, "linear")
    peft_model = inject(model, patch(LoraConfig(r=2), sel))
    assert wrapped_modules(peft_model) == ["block.base_layer.q", "block.k"] and audit(peft_model, sel).ok


def _tiny_llama():
    return models.hf_model("llama", num_hidden_layers=1, hidden_size=32, intermediate_size=32, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=50)


# (id, query, config from the selection): trainable-token layers are targets only for TrainableTokensConfig
TOKEN_CASES = [
    # LoRA's trainable_token_indices wrap the embedding (a TrainableTokensLayer inside a wrapper): not a target
    ("lora-with-trainable-token-indices", "glob:**.q_proj",
     lambda sel: dataclasses.replace(patch(LoraConfig(r=2), sel), trainable_token_indices=[0, 1])),
    ("trainable-tokens-config", "glob:**.embed_tokens",
     lambda sel: TrainableTokensConfig(target_modules=sel.names(), token_indices=[0, 1])),
]


@pytest.mark.parametrize("query, make_config", [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES])
def test_trainable_token_layers_are_targets_only_of_trainable_tokens_config(query, make_config):
    model = _tiny_llama()
    sel = select(model, query)
    snapshot = sel.resolved()
    peft_model = inject(model, make_config(sel))
    assert wrapped_modules(peft_model) == list(snapshot.names) == peft_model.base_model.targeted_module_names
    assert audit(peft_model, snapshot).ok


# ---------------------------------------------------------------------------- audit errors


def _adapted_blocks():
    """twelve_blocks with LoRA on every q_proj, and selections made before and after injection."""
    model = models.twelve_blocks()
    before = {
        "patched": select(model, "linear & glob:**.q_proj"),
        "never-patched": select(model, "linear & leaf"),
        "parameters": select(model, "glob:layers.0.mlp").parameters("weight"),
    }
    peft_model = inject(model, patch(LoraConfig(r=2), before["patched"]))
    return peft_model, model, before


AUDIT_ERRORS = [
    (lambda pm, m, b: audit(pm), ts.TargetselError,
     r"^audit\(peft_model\) needs what was selected: audit\(peft_model, sel\) for target_modules, "
     r"audit\(peft_model, sel, parameters=psel\) when target_parameters were patched too$"),
    (lambda pm, m, b: audit(pm, 42), ts.TargetselError,
     r"^audit\(peft_model, selection\): pass the Selection you patched with, its resolved\(\) snapshot, its lock\(\) "
     r"or a list of module names; got int$"),
    (lambda pm, m, b: audit(pm, None, parameters=4.5), ts.TargetselError,
     r"^audit\(peft_model, parameters=\): pass the ParameterSelection you patched with, its resolved\(\) snapshot or a "
     r"list of parameter names; got float$"),
    (lambda pm, m, b: audit(pm, ["ok", 3]), ts.TargetselError, r"^audit\(\): module names must be strings, got int 3$"),
    (lambda pm, m, b: audit(pm, b["patched"], parameters=("a", None)), ts.TargetselError,
     r"^audit\(\): parameter names must be strings, got NoneType None$"),
    (lambda pm, m, b: audit("model", ["a"]), ts.TargetselError,
     r"^audit\(peft_model, \.\.\.\) needs the model get_peft_model returned, got str$"),
    (lambda pm, m, b: audit(pm, {"format": 1}), ts.SpecError, r"^not a valid lock \(\d+ problem\(s\)\): query: Field required"),
    (lambda pm, m, b: audit(pm, b["parameters"], parameters=["layers.0.mlp.weight"]), ts.TargetselError,
     r"^audit\(\) got two parameter references: ParameterSelection as selection and list as parameters=; pass the "
     r"module selection first \(audit\(peft_model, sel, parameters=psel\)\), or only the parameters$"),
    (lambda pm, m, b: audit(pm, None, parameters=b["patched"]), ts.TargetselError,
     r"^audit\(\.\.\., parameters=\.\.\.\) takes a ParameterSelection \(sel\.parameters\(\.\.\.\)\), its resolved\(\) "
     r"snapshot or a list of parameter names; got a Selection of modules: pass it as the selection$"),
    (lambda pm, m, b: audit(pm, select(m, "linear & leaf")), ts.TargetselError,
     r"^selection 'linear & leaf' was made on a model that already held PEFT adapter layers, so it cannot say what "
     r"was selected before injection\. Pass the selection you gave patch\(\), or its resolved\(\) snapshot \(or "
     r"lock\(\)\) taken before get_peft_model$"),
    (lambda pm, m, b: audit(pm, b["never-patched"]), ts.ModelRewrittenError,
     r"^the model of selection 'linear & leaf' was rewritten by get_peft_model after the selection was made, and "
     r"this selection was never patched, locked or resolved, so what it meant before injection is unknown\. Pass the "
     r"selection you gave patch\(\), or take sel\.resolved\(\) \(or sel\.lock\(\)\) before get_peft_model and pass that$"),
    (lambda pm, m, b: audit(pm, b["patched"], parameters=b["parameters"]), ts.ModelRewrittenError,
     r"^the model of selection 'glob:layers\.0\.mlp' was rewritten by get_peft_model after the selection was made, "
     r"and this selection was never patched"),
]


@pytest.mark.parametrize("call, error, message", AUDIT_ERRORS, ids=[m[1:60] for *_, m in AUDIT_ERRORS])
def test_audit_errors(call, error, message):
    peft_model, model, before = _adapted_blocks()
    with pytest.raises(error, match=message):
        call(peft_model, model, before)


# ---------------------------------------------------------------------------- selections made before injection

# Every terminal of a selection made before get_peft_model refuses to answer for the rewritten tree.
TERMINALS = [
    ("names", lambda s: s.names()),
    ("len", len),
    ("modules", lambda s: s.modules()),
    ("is_empty", lambda s: s.is_empty()),
    ("contains", lambda s: "layers.0.mlp" in s),
    ("iter", list),
    ("assert_count_is", lambda s: s.assert_count_is(12)),
    ("regex", lambda s: s.regex()),
    ("to_peft", lambda s: s.to_peft()),
    ("lora_params", lambda s: s.lora_params(2)),
    ("explain", lambda s: s.explain("layers.0.mlp")),
    ("lock", lambda s: s.lock()),
    ("resolved", lambda s: s.resolved()),
    ("refined-after", lambda s: s.leaf().names()),
    ("combined-with-a-new-selection", lambda s: (select(s.model, "leaf") & s).names()),
    ("new-selection-minus-it", lambda s: (select(s.model, "leaf") - s).names()),
    ("under-it", lambda s: select(s.model, "leaf").under(s).names()),
    ("parameters", lambda s: s.parameters("weight").names()),
    ("parameters-resolved", lambda s: s.parameters().resolved()),
    ("patch", lambda s: patch(LoraConfig(), s)),
]

REWRITTEN = (
    r"^the model of selection '[^']+' \(Module\) was rewritten by get_peft_model after the selection "
    r"was made: it now holds 12 PEFT adapter layer\(s\), so the selection would answer for adapter internals "
    r"\(base_layer, lora_A, …\) instead of the model it was made on\. Use what it resolved to before injection \(take "
    r"sel\.resolved\(\) or sel\.lock\(\) before get_peft_model; audit\(peft_model, sel\) compares with what PEFT "
    r"wrapped\), or select again on the adapted model on purpose: select\(model, '[^']+'\)\.$"
)


@pytest.mark.parametrize("terminal", [t for _, t in TERMINALS], ids=[i for i, _ in TERMINALS])
def test_selection_made_before_get_peft_model_raises(terminal):
    model = models.twelve_blocks()
    sel = select(model, "linear & glob:**.mlp")
    assert len(sel) == 12
    inject(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ts.ModelRewrittenError, match=REWRITTEN) as caught:
        terminal(sel)
    assert isinstance(caught.value, ts.TargetselError) and isinstance(caught.value, RuntimeError)


def test_what_still_works_after_injection():
    model = models.twelve_blocks()
    sel = select(model, "linear & glob:**.mlp")
    snapshot = sel.resolved()
    psel = select(model, "glob:layers.{0,1}.mlp").parameters("weight")
    psnapshot = psel.resolved()
    peft_model = inject(model, patch(LoraConfig(r=2), sel))
    # model-independent parts and displays answer; a display says why it does not list names
    assert sel.query == "linear & glob:**.mlp" and str(sel.selector) == sel.query and sel.model is model
    assert repr(sel).startswith("Selection('linear & glob:**.mlp') of Module: not evaluated, the model was rewritten")
    assert "not evaluated" in sel._repr_html_() and "not evaluated" in str(sel.__rich__())
    assert repr(psel).startswith("ParameterSelection('glob:layers.{0,1}.mlp', 'weight') of Module: not evaluated")
    # the snapshots, and audit with the selection itself
    assert audit(peft_model, sel).ok and audit(peft_model, snapshot).ok
    assert snapshot.names == tuple(f"layers.{i}.mlp" for i in range(12))
    assert psnapshot.names == ("layers.0.mlp.weight", "layers.1.mlp.weight")
    # a selection made on the adapted model, on purpose, answers for the adapted tree
    now = select(model, "glob:layers.0.mlp.*")
    assert now.names()[:2] == ["layers.0.mlp.base_layer", "layers.0.mlp.lora_dropout"]
    assert (now & select(model, "leaf")).names()[0] == "layers.0.mlp.base_layer"
    # once the adapters are removed, the old selection means what it meant again
    peft_model.unload()
    assert sel.names() == list(snapshot.names)


def test_selection_made_on_an_adapted_model_is_not_stopped_by_more_injection():
    model = models.twelve_blocks()
    inject(model, LoraConfig(r=2, target_modules=["q_proj"]))
    sel = select(model, "glob:**.v_proj")
    assert sel.names() == [f"layers.{i}.attn.v_proj" for i in range(12)]


# ---------------------------------------------------------------------------- resolved()


def test_resolved_snapshot_of_modules():
    model = models.twelve_blocks()
    snap = select(model, "linear & glob:layers.{0..2}.attn.*").resolved()
    assert snap == Resolved(query="linear & glob:layers.{0..2}.attn.*",
                            names=tuple(f"layers.{i}.attn.{p}" for i in range(3) for p in ("q_proj", "v_proj")),
                            model_class="Module", module_count=74)
    assert snap.kind == "modules" and snap.pattern is None and snap.count == 6
    assert repr(snap) == ("Resolved('linear & glob:layers.{0..2}.attn.*' → 6 of the 74 modules of Module: "
                          "layers.{0..2}.attn.{q,v}_proj (6))")
    assert len(build_index(model).names) - 1 == snap.module_count


def test_resolved_snapshot_of_parameters():
    model = tiny_moe("qwen3_moe")
    snap = select(model, EXPERTS).parameters("gate_up").resolved()
    assert snap.kind == "parameters" and snap.pattern == "gate_up" and snap.model_class == "Qwen3MoeForCausalLM"
    assert snap.names == layers("mlp.experts.gate_up_proj")
    assert repr(snap) == (f"Resolved('glob:**.mlp.experts'.parameters('gate_up') → 2 parameter(s) in Qwen3MoeForCausalLM "
                          f"({snap.module_count} modules): model.layers.{{0,1}}.mlp.experts.gate_up_proj (2))")


@pytest.mark.parametrize("kind", ["modules", "parameters"])
def test_resolved_is_frozen_picklable_and_json(kind):
    model = models.twelve_blocks()
    sel = select(model, "glob:layers.1{,0,1}.mlp")
    snap = sel.resolved() if kind == "modules" else sel.parameters().resolved()
    data = snap.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"kind", "query", "pattern", "model_class", "module_count", "count", "names"}
    assert Resolved.from_dict(data) == snap == pickle.loads(pickle.dumps(snap))
    assert hash(snap) == hash(Resolved.from_dict(data))
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.names = ()


def _resolved_dict(**changes):
    data = select(models.twelve_blocks(), "glob:layers.0.mlp").resolved().to_dict()
    data.update(changes)
    return data


RESOLVED_ERRORS = [
    (["names"], r"^Resolved\.from_dict takes the dict Resolved\.to_dict\(\) returns, got list$"),
    ({"query": "x"}, r"^not a Resolved dict: missing kind, pattern, model_class, module_count, count, names$"),
    (_resolved_dict(extra=1), r"^not a Resolved dict: unknown extra$"),
    ({k: v for k, v in _resolved_dict(extra=1).items() if k != "names"}, r"^not a Resolved dict: missing names; unknown extra$"),
    (_resolved_dict(module_count="85"), r"^Resolved\.from_dict: 'module_count' has the wrong type \(str\)$"),
    (_resolved_dict(count=True), r"^Resolved\.from_dict: 'count' has the wrong type \(bool\)$"),
    (_resolved_dict(kind="buffers"), r"^Resolved\.from_dict: kind is 'modules' or 'parameters', got 'buffers'$"),
    (_resolved_dict(count=2), r"^Resolved\.from_dict: names must be strings, as many as count says; take a new snapshot$"),
    (_resolved_dict(names=[1]), r"^Resolved\.from_dict: names must be strings"),
]


@pytest.mark.parametrize("data, message", RESOLVED_ERRORS, ids=[m[1:50] for _, m in RESOLVED_ERRORS])
def test_resolved_from_dict_errors(data, message):
    with pytest.raises(ts.SpecError, match=message):
        Resolved.from_dict(data)


# ---------------------------------------------------------------------------- the index lists what PEFT sees


class _EqualByShape(nn.Linear):
    """Value-based equality (two projections of one shape are "the same"): `named_modules()` keeps the first."""

    def __eq__(self, other):
        return isinstance(other, _EqualByShape) and self.weight.shape == other.weight.shape

    def __hash__(self):
        return hash(tuple(self.weight.shape))


class _Unhashable(nn.Linear):
    """__eq__ without __hash__: `named_modules()` itself raises TypeError on it."""

    def __eq__(self, other):
        return self is other

    __hash__ = None


def _equal_blocks(cls):
    with torch.device("meta"):
        model = nn.Module()
        for i, shape in enumerate([(4, 4), (4, 4), (4, 8), (4, 4)]):
            block = nn.Module()
            block.proj = cls(*shape)
            block.proj.inner = nn.Linear(2, 2)  # skipped with an equal parent: the subtree goes too
            block.other = nn.Linear(4, 4)
            setattr(model, f"b{i}", block)
        model.again = model.b0.proj  # one module at a second place: listed once, as always
    return model


def test_regression_value_equal_modules_deduplicated():
    model = _equal_blocks(_EqualByShape)
    torch_names = [n for n, _ in model.named_modules()][1:]
    assert select(model).names() == torch_names
    assert "b1.proj" not in torch_names and "b1.proj.inner" not in torch_names and "b2.proj" in torch_names
    index = build_index(model)
    assert index.param_names == [n for n, _ in model.named_parameters()]
    sel = select(model, "glob:*.proj.inner")
    assert sel.names() == ["b0.proj.inner", "b2.proj.inner"]
    peft_model = inject(model, patch(LoraConfig(r=2), sel))
    assert wrapped_modules(peft_model) == ["b0.proj.inner", "b2.proj.inner"] and audit(peft_model, sel).ok


def test_unhashable_modules_are_listed_by_identity():
    model = _equal_blocks(_Unhashable)
    with pytest.raises(TypeError, match=r"unhashable type"):
        list(model.named_modules())  # torch cannot walk it, nor can PEFT; targetsel still lists it
    expected = [f"b{i}{part}" for i in range(4) for part in ("", ".proj", ".proj.inner", ".other")]
    assert select(model).names() == expected
    assert select(model, "glob:again").names() == []  # the shared module stays listed once
