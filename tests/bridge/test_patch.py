"""patch(config, selection): exact targets proven with PEFT's own matcher and a real injection."""

from __future__ import annotations

import copy
import re

import pytest
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

import models
import targetsel as ts
from targetsel import patch, select, verify

# (id, model factory, selection builder)
CASES = [
    ("demo-one-liner", models.demo, lambda s: s.trainable().type(nn.Linear).leaf()),
    ("demo-no-plora", models.demo, lambda s: s.linear().trainable() - s.under(s.type("PLoRA"))),
    ("demo-frozen-vision-only", models.demo, lambda s: s.linear().frozen()),
    ("demo-last-two-text-blocks", models.demo, lambda s: s.linear().layers("-2..", within="language_model.layers").leaf()),
    ("suffix-trap-short", models.suffix_trap, lambda s: s.glob("attn.q_proj")),
    ("suffix-trap-long", models.suffix_trap, lambda s: s.glob("block.attn.q_proj")),
    ("suffix-trap-both", models.suffix_trap, lambda s: s.glob("**.q_proj")),
    ("blocks-1-not-10", models.twelve_blocks, lambda s: s.layers(1).linear()),
    ("blocks-10-11", models.twelve_blocks, lambda s: s.layers("10..").glob("**.q_proj")),
    ("tied-head", models.tied_and_shared, lambda s: s.glob("b.other")),
    ("plora-children", models.plora_model, lambda s: s.name(r"Plora_[AB]$")),
    ("plora-outer", models.plora_model, lambda s: s.linear().outermost()),
    ("hf-llama", lambda: models.hf_model("llama"), lambda s: s.linear()),
    ("hf-gpt2-conv1d", lambda: models.hf_model("gpt2"), lambda s: s.linear().name(r"\.attn\.")),
    ("hf-llava-language-only", lambda: models.hf_model("llava"), lambda s: s.linear().under("language_model")),
    ("hf-t5-decoder", lambda: models.hf_model("t5"), lambda s: s.linear().under("decoder").glob("**.{q,v}")),
    ("hf-whisper-encoder", lambda: models.hf_model("whisper"), lambda s: s.linear().under("encoder").layers("-2..")),
    ("hf-qwen2vl-mlp", lambda: models.hf_model("qwen2_vl"), lambda s: s.linear().glob("**.mlp.*").layers(0)),
    ("hf-mixtral-attn", lambda: models.hf_model("mixtral"), lambda s: s.linear().glob("**.self_attn.*")),
]


def _peft_reference(model, config):
    """PEFT's own matcher over every module name (brute force, no targetsel code)."""
    return [n for n, _ in model.named_modules() if n and check_target_module_exists(config, n)]


@pytest.mark.parametrize("form", ["auto", "regex"])
@pytest.mark.parametrize("case_id, factory, build", CASES, ids=[c[0] for c in CASES])
def test_patch_is_exact_under_peft(case_id, factory, build, form):
    model = factory()
    sel = build(select(model))
    names = sel.names()
    assert names, "every case selects something"
    config = LoraConfig(r=4, lora_alpha=8)
    new = patch(config, sel, form=form)
    assert config.target_modules is None  # input untouched
    assert _peft_reference(model, new) == names
    assert ts.verify(model, new) == names
    peft_model = get_peft_model(model, new)
    assert models.wrapped_names(peft_model) == names


def test_patch_keeps_every_other_field():
    model = models.demo()
    config = LoraConfig(r=7, lora_alpha=21, lora_dropout=0.1, bias="lora_only", use_rslora=True, task_type="CAUSAL_LM")
    new = patch(config, select(model).linear().trainable().leaf())
    for field in ("r", "lora_alpha", "lora_dropout", "bias", "use_rslora", "task_type", "peft_type", "init_lora_weights"):
        assert getattr(new, field) == getattr(config, field), field
    assert type(new) is LoraConfig and new is not config


def test_patch_never_shares_mutable_fields_with_the_input():
    config = LoraConfig(r=4, rank_pattern={"x": 2}, alpha_pattern={"y": 3})
    snapshot = copy.deepcopy(config.to_dict())
    new = patch(config, select(models.demo()).linear().trainable().leaf())
    new.rank_pattern["z"] = 9
    assert config.to_dict() == snapshot


def test_list_form_over_matches_are_refused_not_emitted():
    model = models.suffix_trap()
    sel = select(model).glob("attn.q_proj")
    with pytest.raises(ts.SelectionError, match=r"a list of full names would over-match here.*\['block.attn.q_proj'\]"):
        sel.to_peft("list")
    with pytest.raises(ts.SelectionError, match=r"no exact suffix list exists"):
        sel.to_peft("suffixes")
    assert re.fullmatch(sel.to_peft("regex"), "attn.q_proj") and not re.fullmatch(sel.to_peft("regex"), "block.attn.q_proj")


@pytest.mark.parametrize("form", ["list", "suffixes", "regex", "auto"])
def test_every_form_is_exact(form):
    model = models.demo()
    sel = select(model).linear().trainable().leaf()
    names = sel.names()
    config = LoraConfig(target_modules=sel.to_peft(form))
    assert ts.verify(model, config) == names
    assert models.wrapped_names(get_peft_model(model, config)) == names


def test_suffix_form_is_short():
    sel = select(models.demo()).linear().trainable().leaf()
    assert sorted(sel.to_peft("suffixes")) == sorted(
        ["linear_1", "linear_2", "Plora_A", "Plora_B", "gate_proj", "up_proj", "down_proj"]
    )


# (id, config field values, error message regex)
CONFLICTS = [
    ("exclude-modules", dict(exclude_modules=["language_model.layers.0.mlp.up_proj"]),
     r"^LoraConfig carries exclude_modules=\{'language_model.layers.0.mlp.up_proj'\}, which changes what PEFT targets: "
     r"1 selected module\(s\) would not be targeted: language_model.layers.0.mlp.up_proj\. Remove the field"),
    ("exclude-regex", dict(exclude_modules=r".*\.0\..*"), r"carries exclude_modules='.*', which changes what PEFT targets: 11 selected module\(s\) would not be targeted: "
     r"language_model.layers.0.self_attn.\{q,k,v,o\}_proj.Plora_\{A,B\} \(8\), language_model.layers.0.mlp.\{gate,up,down\}_proj \(3\)"),
    ("modules-to-save", dict(modules_to_save=["down_proj"]), r"carries modules_to_save=\['down_proj'\].*6 selected module\(s\) would not be targeted: language_model.layers.\{0..5\}.mlp.down_proj \(6\)"),
]


@pytest.mark.parametrize("case_id, fields, message", CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_fields_that_change_the_matched_set_raise(case_id, fields, message):
    model = models.demo()
    config = LoraConfig(r=4, **fields)
    before = config.to_dict()
    with pytest.raises(ts.ConfigError, match=message):
        patch(config, select(model).linear().trainable().leaf(), form="list")
    assert config.to_dict() == before


def test_layers_to_transform_with_a_suffix_list_raises():
    """What PEFT keeps under layers_to_transform changed between versions (0.18 keeps none here,
    0.21 keeps block 0): the message must report what the *installed* PEFT does."""
    import dataclasses
    import re

    from targetsel.text.grouping import summarize_names

    model = models.twelve_blocks()
    config = LoraConfig(r=2, layers_to_transform=[0], layers_pattern="layers")
    sel = select(model).glob("**.q_proj")
    outcome = ts.dry_run(model, dataclasses.replace(config, target_modules=sel.to_peft("suffixes")))
    kept = [] if outcome.error else list(outcome.modules)  # 0.18 keeps none: get_peft_model would raise
    lost = [n for n in sel.names() if n not in kept]
    assert lost, "layers_to_transform=[0] must drop blocks 1..11 under every PEFT version"
    with pytest.raises(ts.ConfigError, match=r"^LoraConfig carries layers_to_transform=\[0\], layers_pattern='layers', which changes what PEFT targets: "
                       + re.escape(f"{len(lost)} selected module(s) would not be targeted: {summarize_names(lost, limit=4)}")):
        patch(config, sel, form="suffixes")


# The one list of match-changing fields (bridge/match_fields.py), read by patch() and check().
_HAS_TYING = "ensure_weight_tying" in LoraConfig.__dataclass_fields__  # peft >= 0.18
_FIELDS = dict(exclude_modules=["a"], layers_to_transform=[0], layers_pattern="layers",
               **({"ensure_weight_tying": True} if _HAS_TYING else {}))


@pytest.mark.parametrize("config, removing_only, groups", [
    (LoraConfig(), False, []),
    (LoraConfig(exclude_modules=[], modules_to_save=[], layers_to_transform=None), False, []),
    (LoraConfig(**_FIELDS), False, [("exclude_modules",), ("layers_to_transform", "layers_pattern"),
                                    *([("ensure_weight_tying",)] if _HAS_TYING else [])]),
    (LoraConfig(**_FIELDS), True, [("exclude_modules",), ("layers_to_transform", "layers_pattern")]),
    (LoraConfig(target_parameters=["experts.gate_up_proj"]), False, [("target_parameters",)]),
])
def test_match_changing_fields_of_a_config(config, removing_only, groups):
    from targetsel.bridge.match_fields import set_fields

    assert set_fields(config, removing_only=removing_only) == groups


@pytest.mark.skipif(not _HAS_TYING, reason="peft < 0.18 has no ensure_weight_tying")
def test_clearing_fields_copies_the_config():
    from targetsel.bridge.match_fields import without

    config = LoraConfig(target_modules=["q"], **_FIELDS)
    new = without(config, ("exclude_modules", "ensure_weight_tying", "layers_to_transform", "layers_pattern"), target_modules=["k"])
    assert (new.exclude_modules, new.ensure_weight_tying, new.layers_to_transform, new.target_modules) == (None, False, None, {"k"})
    assert (config.exclude_modules, config.ensure_weight_tying, config.target_modules) == ({"a"}, True, {"q"})
    with pytest.raises(ts.ConfigError, match=r"^LoraConfig rejected the compiled targets: When `layers_pattern` is specified"):
        without(config, ("layers_to_transform",))  # layers_pattern alone: LoraConfig refuses it


# "auto" never compiles the list form here: a shorter exact form is found first, and checking the list
# (PEFT's suffix rule over every name) is the slowest step of patch() on a large model.
@pytest.mark.parametrize("form, compiled", [("auto", ["regex", "suffixes"]), ("regex", ["regex"]), ("list", ["list"])])
def test_patch_evaluates_once_and_compiles_each_form_once(monkeypatch, form, compiled):
    """patch() used to evaluate the selection about six times and compile each form two or three times."""
    import warnings

    import targetsel.model.resolution as resolution
    import targetsel.views.targets as targets

    resolved, forms = [], []
    real_resolve, real_forms = resolution.resolve, targets.candidate_forms
    monkeypatch.setattr(resolution, "resolve", lambda *a, **k: resolved.append(1) or real_resolve(*a, **k))
    monkeypatch.setattr(targets, "candidate_forms", lambda res, kind="auto": forms.append(kind) or real_forms(res, kind))
    sel = select(models.demo()).linear().trainable().leaf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = patch(LoraConfig(), sel, form=form)
    assert (len(resolved), sorted(forms)) == (1, compiled)
    assert ts.verify(sel.model, new) == sel.names()


def test_harmless_fields_are_kept():
    model = models.demo()
    config = LoraConfig(r=4, exclude_modules=["lm_head"])  # excludes nothing we select
    names = select(model).linear().trainable().leaf().names()
    new = patch(config, select(model).linear().trainable().leaf())
    assert new.exclude_modules == {"lm_head"}
    assert ts.verify(model, new) == names
    assert models.wrapped_names(get_peft_model(model, new)) == names


def test_empty_selection_says_which_filter_emptied_it():
    model = models.demo()
    model.requires_grad_(False)
    with pytest.raises(
        ts.EmptySelectionError,
        match=r"^the selection 'linear & trainable' is empty: trainable\(\) kept 0 of 116 modules of DemoVLM: "
        r"every parameter has requires_grad=False \(189 parameters\)\. If you froze the base model before selecting, select first\.",
    ):
        patch(LoraConfig(), select(model).linear().trainable())


def test_nested_targets_raise_with_pairs():
    model = models.plora_model()
    with pytest.raises(
        ts.NestedTargetsError,
        match=r"(?s)^12 selected module\(s\) sit inside another selected module.*layers.0.wqkv  ⊃  layers.0.wqkv.Plora_A.*\.leaf\(\).*\.outermost\(\)",
    ):
        patch(LoraConfig(), select(model).linear())


@pytest.mark.parametrize(
    "config, selection, error, message",
    [
        ({"r": 8}, None, ts.ConfigError, r"needs a PEFT config object such as peft.LoraConfig\(r=16\), got dict \(a dict"),
        ("lora", None, ts.ConfigError, r"needs a PEFT config object .* got str"),
        ("prompt", None, ts.ConfigError, r"PromptTuningConfig .* has no target_modules field"),
        (LoraConfig(), "linear", ts.TargetselError, r"needs a targetsel Selection, got str"),
    ],
)
def test_patch_bad_arguments(config, selection, error, message):
    from peft import PromptTuningConfig

    if config == "prompt":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    sel = select(models.demo()).linear() if selection is None else selection
    with pytest.raises(error, match=message):
        patch(config, sel)


def test_readme_one_liner():
    model = models.demo()
    names = select(model).trainable().type(nn.Linear).leaf().names()
    config = LoraConfig(target_modules=names)
    assert ts.verify(model, config) == names
    assert models.wrapped_names(get_peft_model(model, config)) == names
