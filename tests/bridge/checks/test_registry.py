"""Preflight checks: every code, both incidents, and how patch() acts on findings."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from torch import nn

import models
import targetsel as ts
from targetsel import check, patch, select, verify
from targetsel.bridge.checks import CODES

SAFE = "linear & trainable - type:PLoRA - under:(type:PLoRA)"


def codes(findings):
    return [f.code for f in findings]


def by_code(findings, code):
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, codes(findings)
    return hits[0]


# ---------------------------------------------------------------------------- the two incidents


def test_incident_plora_subclass_is_named_before_injection():
    """InternLM-XComposer2: PLoRA(nn.Linear) with Plora_A/Plora_B children and forward(x, im_mask)."""
    model = models.plora_model()
    finding = by_code(check(model, select(model, "linear & outermost")), "subclass-target")
    assert (finding.severity, finding.modules) == (
        "warning", ("layers.0.wqkv", "layers.0.wo", "layers.1.wqkv", "layers.1.wo", "layers.2.wqkv", "layers.2.wo"))
    assert finding.message == (
        "6 selected PLoRA module(s) subclass torch.nn.Linear and add child modules Plora_A, Plora_B and "
        "forward(x, im_mask=None): layers.{0..2}.{wqkv,wo} (6). LoRA wraps each as a plain Linear "
        "(peft.tuners.lora.layer.Linear): its update is computed from the first input alone and added to whatever "
        "forward(x, im_mask=None) returns (the extra arguments never reach the adapter); merging writes into `weight` "
        "only; get_peft_model freezes the module's own parameters (weight, Plora_A.weight, Plora_B.weight). Leave them "
        "out (- type:PLoRA), or, if you mean to adapt them, check the wrapped forward and re-enable the parameters that "
        "must keep training after get_peft_model."
    )
    # ... and what it says is what PEFT does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, patch(LoraConfig(r=2), select(model, "type:PLoRA")))
    wrapped = peft_model.base_model.model.layers[0].wqkv
    assert type(wrapped).__name__ == "Linear" and type(wrapped.base_layer).__name__ == "PLoRA"
    assert not any(p.requires_grad for p in wrapped.base_layer.parameters())


def test_incident_all_linear_targets_plora_and_its_children():
    model = models.plora_model()
    findings = check(model, LoraConfig(target_modules="all-linear"))
    nested = by_code(findings, "nested-targets")
    assert nested.severity == "error"
    assert nested.message.startswith("12 selected module(s) sit inside another selected module; PEFT would wrap the "
                                     "outer one and then crash (AttributeError) reaching the inner one:\n"
                                     "  layers.0.wqkv  ⊃  layers.0.wqkv.Plora_A\n")
    with pytest.raises(ts.NestedTargetsError, match=r"Keep one level: add \.leaf\(\)"):
        patch(LoraConfig(), select(model, "linear"))


def test_incident_frozen_vision_tower_demo():
    """peft #2250: the vision tower is frozen, q_proj/v_proj by name adapts it anyway."""
    model = models.demo()
    finding = by_code(check(model, LoraConfig(target_modules=["q_proj", "v_proj"])), "frozen-target")
    assert finding.severity == "warning"
    assert finding.modules == tuple(f"vision_tower.layers.{i}.self_attn.{p}_proj" for i in range(4) for p in "qv")
    assert finding.message == (
        "8 of the 20 selected modules have every parameter frozen (requires_grad=False), all inside the frozen "
        "vision_tower: vision_tower.layers.{0..3}.self_attn.{q,v}_proj (8). PEFT matches by name and gives them "
        "trainable LoRA adapters anyway, so the part you froze gets trained. A name-only target_modules cannot tell "
        "them apart from the trainable modules of the same name: build the targets with targetsel.bridge.patch(config, "
        "select(model).linear().trainable()), or set exclude_modules=r\"vision_tower\\..*\"."
    )


def test_incident_frozen_vision_tower_real_llava():
    model = models.hf_model("llava", text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 2})
    model.model.vision_tower.requires_grad_(False)
    finding = by_code(check(model, LoraConfig(target_modules=["q_proj", "v_proj"])), "frozen-target")
    assert finding.modules == tuple(f"model.vision_tower.encoder.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "vq")
    assert finding.message.startswith("4 of the 8 selected modules have every parameter frozen (requires_grad=False), "
                                      "all inside the frozen model.vision_tower: ")
    # the fix the message proposes is exact
    fixed = check(model, select(model, "linear & trainable & glob:**.{q,v}_proj"))
    assert "frozen-target" not in codes(fixed)


# ---------------------------------------------------------------------------- every code


def _lora_named_model():
    with torch.device("meta"):
        m = nn.Module()
        m.lora_proj = nn.Linear(4, 4)
        m.other = nn.Linear(4, 4)
    return m


def _lora_parameter_model():
    """A parameter, not a module, whose key contains 'lora_'."""
    with torch.device("meta"):
        m = nn.Module()
        m.scaled = nn.Linear(4, 4)
        m.scaled.register_parameter("lora_scale", nn.Parameter(torch.ones(4)))
        m.other = nn.Linear(4, 4)
    return m


def _tied_lora_parameter_model():
    """A tied parameter whose second registration's key contains 'lora_' (its first does not)."""
    with torch.device("meta"):
        m = nn.Module()
        m.head = nn.Linear(4, 4)  # listed first: named_parameters() names the weight head.weight
        m.other = nn.Linear(4, 4)
        m.other.register_parameter("lora_tied", m.head.weight)
    return m


def _all_frozen_demo():
    m = models.demo()
    m.requires_grad_(False)
    return m


def _head_demo():
    return models.demo()


# (id, model factory, target(model), config, code, severity, modules predicate, message regex)
CASES = [
    ("empty-selection", models.demo, lambda m: select(m, "linear & glob:nothing.*"), None, "empty-selection", "error",
     lambda ms: ms == (), r"^the selection 'linear & glob:nothing\.\*' is empty: glob:nothing\.\* kept 0 of \d+ modules of DemoVLM"),
    ("empty-config", models.demo, lambda m: LoraConfig(target_modules=["q_prj"]), None, "empty-selection", "error",
     lambda ms: ms == (), r"targets none of the 177 modules of DemoVLM; get_peft_model would raise ValueError\. Nearest misses — module names: q_proj"),
    ("nested", models.demo, lambda m: select(m, "glob:language_model.layers.0.self_attn.q_proj{,.Plora_A}"), None, "nested-targets", "error",
     lambda ms: ms == ("language_model.layers.0.self_attn.q_proj", "language_model.layers.0.self_attn.q_proj.Plora_A"),
     r"^1 selected module\(s\) sit inside another selected module"),
    ("unsupported", models.demo, lambda m: select(m, "type:LayerNorm & trainable"), None, "unsupported-type", "error",
     lambda ms: len(ms) == 13, r"^LoRA cannot wrap 13 selected module\(s\) of 1 type\(s\): LayerNorm ×13 .*Keep the layers the method wraps: add \.linear\(\)"),
    ("unsupported-ia3-embedding", models.demo, lambda m: select(m, "type:Embedding"), IA3Config(feedforward_modules=[]), "unsupported-type", "error",
     lambda ms: ms == ("language_model.embed_tokens",), r"^IA3 cannot wrap 1 selected module\(s\) of 1 type\(s\): Embedding ×1"),
    ("container", models.demo, lambda m: select(m, "glob:language_model.layers.{0,1}.mlp"), None, "container-target", "error",
     lambda ms: ms == ("language_model.layers.0.mlp", "language_model.layers.1.mlp"),
     r"^2 selected module\(s\) are containers — modules with children, not layers — that LoRA cannot wrap \(TextMLP ×2\)"),
    ("modules-to-save", models.demo, lambda m: select(m, SAFE), LoraConfig(modules_to_save=["linear_1"]), "modules-to-save-overlap", "error",
     lambda ms: ms == ("multi_modal_projector.linear_1",), r"modules_to_save=\['linear_1'\].*PEFT skips them silently"),
    ("frozen", models.demo, lambda m: select(m, "glob:vision_tower.layers.0.mlp.fc1"), None, "frozen-target", "warning",
     lambda ms: ms == ("vision_tower.layers.0.mlp.fc1",), r"Leave them out: add \.trainable\(\) \(& trainable\) or - under:vision_tower\."),
    ("subclass", models.demo, lambda m: select(m, "type:PLoRA & layers:0"), None, "subclass-target", "warning",
     lambda ms: len(ms) == 4, r"^4 selected PLoRA module\(s\) subclass torch\.nn\.Linear"),
    ("output-head", _head_demo, lambda m: select(m, "glob:lm_head"), None, "output-head", "warning",
     lambda ms: ms == ("lm_head",), r"^The output head lm_head is selected \(its weight is tied to language_model\.embed_tokens\.weight\).*LoRA at r=8 adds 8×\(512\+32000\) = 260,096 parameters there"),
    ("adapter-name-clash", _lora_named_model, lambda m: select(m, "glob:other"), None, "adapter-name-clash", "warning",
     lambda ms: ms == ("lora_proj",), r"^1 base-model name\(s\) of Module contain 'lora_'"),
    ("adapter-name-clash (parameter)", _lora_parameter_model, lambda m: select(m, "glob:other"), None,
     "adapter-name-clash", "warning", lambda ms: ms == ("scaled",), r"^1 base-model name\(s\) of Module contain 'lora_'"),
    ("adapter-name-clash (tied parameter)", _tied_lora_parameter_model, lambda m: select(m, "glob:head"), None,
     "adapter-name-clash", "warning", lambda ms: ms == ("other",), r"^1 base-model name\(s\) of Module contain 'lora_'"),
    ("shared-module", models.tied_and_shared, lambda m: select(m, "glob:a.proj"), None, "shared-module", "warning",
     lambda ms: ms == ("a.proj",), r"registered under more than one name: a\.proj \(also b\.proj\)"),
    ("all-frozen", _all_frozen_demo, lambda m: select(m, "trainable & linear"), None, "all-frozen", "info",
     lambda ms: ms == (), r"trainable\(\) ran on DemoVLM, whose \d+ parameters all have requires_grad=False.*select first, then freeze"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_code(case):
    _, make, target, config, code, severity, modules_ok, message = case
    model = make()
    findings = check(model, target(model), **({"config": config} if config is not None else {}))
    finding = by_code(findings, code)
    assert finding.severity == severity == CODES[code].severity
    assert modules_ok(finding.modules), finding.modules
    assert re.search(message, finding.message, re.S), finding.message
    assert str(finding).startswith(f"{severity} [{code}] ")
    assert finding.to_dict() == {"code": code, "severity": severity, "message": finding.message, "modules": list(finding.modules)}


def test_findings_are_sorted_errors_first():
    model = models.demo()
    findings = check(model, "linear")
    ranks = [("error", "warning", "info").index(f.severity) for f in findings]
    assert ranks == sorted(ranks) and findings[0].code == "nested-targets"


def test_query_and_selection_targets_agree():
    model = models.demo()
    assert check(model, "type:PLoRA") == check(model, select(model).type("PLoRA"))


def test_a_clean_selection_has_no_errors_or_warnings_but_the_name_clash():
    model = models.demo()
    assert codes(check(model, SAFE)) == ["adapter-name-clash"]  # the demo's Plora_A/B names contain 'lora_'


CHECK_ERRORS = [
    (lambda m: check(m, 3), ts.TargetselError, r"target must be a Selection, a query string or a PEFT config, got int"),
    (lambda m: check(m, LoraConfig(target_modules=["q_proj"]), config=LoraConfig()), ts.TargetselError, r"pass it once, without config="),
    (lambda m: check(m, select(models.demo(), "linear")), ts.ModelMismatchError, r"the selection belongs to another model"),
    (lambda m: check("not a model", "linear"), ts.NotAModuleError, r""),
    (lambda m: check(m, "linear &"), ts.QuerySyntaxError, r"'&' needs an atom"),
    (lambda m: check(m, "linear", config="LoraConfig"), ts.TargetselError, r""),
]


@pytest.mark.parametrize("call, error, message", CHECK_ERRORS, ids=[m or e.__name__ for _, e, m in CHECK_ERRORS])
def test_check_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(models.demo())


# ---------------------------------------------------------------------------- patch() acts on findings


def test_patch_warns_once_per_warning_finding():
    model = models.demo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch(LoraConfig(), select(model, "linear & leaf & glob:vision_tower.**"))
    ours = [w for w in caught if issubclass(w.category, ts.TargetselWarning)]
    assert sorted(w.message.finding.code for w in ours) == ["adapter-name-clash", "frozen-target"]
    assert issubclass(ts.TargetselWarning, UserWarning)
    assert all(w.filename == __file__ for w in ours)  # attributed to the caller's line


@pytest.mark.parametrize(
    "query, error, first",
    [
        ("linear", ts.NestedTargetsError, r"^48 selected module\(s\) sit inside"),
        ("linear & glob:nothing.*", ts.EmptySelectionError, r"^the selection 'linear & glob:nothing\.\*' is empty"),
        ("type:LayerNorm | (linear & leaf)", ts.PreflightError, r"^LoRA cannot wrap 22 selected module\(s\)"),
        ("glob:language_model.layers.0.mlp | glob:language_model.embed_tokens", ts.PreflightError, r"^1 selected module\(s\) are containers"),
    ],
)
def test_patch_raises_on_errors_with_all_findings(query, error, first):
    model = models.demo()
    config = LoraConfig()
    with pytest.raises(error, match=first) as info:
        patch(config, select(model, query))
    assert info.value.findings and all(hasattr(f, "code") for f in info.value.findings)
    assert isinstance(info.value, ts.TargetselError)


def test_strict_false_downgrades_what_peft_survives():
    model = models.demo()
    config = LoraConfig(modules_to_save=["linear_1"])
    sel = select(model, SAFE)
    with pytest.raises(ts.ModulesToSaveOverlapError, match=r"strict=False"):
        patch(config, sel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = patch(config, sel, strict=False)
    assert "modules-to-save-overlap" in [w.message.finding.code for w in caught if issubclass(w.category, ts.TargetselWarning)]
    assert verify(model, new) == [n for n in sel.names() if n != "multi_modal_projector.linear_1"]
    # errors PEFT cannot survive stay errors
    with pytest.raises(ts.NestedTargetsError):
        patch(LoraConfig(), select(model, "linear"), strict=False)


# ---------------------------------------------------------------------------- the registry


def test_codes_are_reported_by_severity_then_registration():
    """The report order: errors, warnings, infos; within each, the order the rule modules register
    their codes (bridge/checks/__init__.py imports them in that order)."""
    severities = [CODES[c].severity for c in CODES]
    assert severities == sorted(severities, key=("error", "warning", "info").index)
    errors = [c for c in CODES if CODES[c].severity == "error"]
    # patch() raises the class of the first error: the order among these decides which one
    assert errors.index("empty-selection") < errors.index("nested-targets") < errors.index("container-target") \
        < errors.index("unsupported-type") < errors.index("modules-to-save-overlap") < errors.index("peft-rejects") \
        < errors.index("modules-to-save-wraps")
    warnings_ = [c for c in CODES if CODES[c].severity == "warning"]
    assert warnings_[:5] == ["frozen-target", "subclass-target", "output-head", "adapter-name-clash", "shared-module"]


@pytest.mark.parametrize("code, severity, message", [
    ("nested-targets", "error", r"rule 'nested-targets' is registered twice"),
    ("a-new-code", "fatal", r"rule 'a-new-code': severity must be one of \('error', 'warning', 'info'\), not 'fatal'"),
])
def test_a_rule_registers_once_with_a_known_severity(code, severity, message):
    from targetsel.bridge.checks import rule

    before = dict(CODES)
    with pytest.raises(AssertionError, match=message):
        rule(code, severity)(lambda s: [])
    assert CODES == before
