"""Quantized layers without weights: the families and PEFT versions, the `quantized` atom, and the
model a quantized checkpoint's config.json loads as, built on the meta device by transformers' quantizers."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from peft import LoraConfig

import targetsel as ts
from targetsel import check, dry_run, select
from targetsel.bridge import peft_support
from targetsel.cli.quantized_loading import QuantizedBuild, quantize_as_loaded
from targetsel.model.quantized import FAMILIES, TORCHAO, family_of_class, installed_peft
from targetsel.views.diagnose import explain_empty
from targetsel.views.display import summary_rows

from models import demo

REPO = Path(__file__).resolve().parents[2]
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128, hidden_size=64,
             intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


# ---------------------------------------------------------------------------- families and PEFT versions

# (family, first PEFT release with a dedicated LoRA layer, first without) — docs/quantized.md states the same
WRAPPED_SINCE = {
    "bnb-8bit": ((0, 13), None), "bnb-4bit": ((0, 13), None), "eetq": ((0, 13), None),
    "eetq-transformers": ((0, 20), None), "aqlm": ((0, 13), None), "awq-gptqmodel": ((0, 19), None),
    "awq-autoawq": ((0, 13), (0, 19)), "gptq-gptqmodel": ((0, 15), None), "gptq-autogptq": ((0, 13), (0, 19)),
    "hqq": ((0, 13), None), "inc": ((0, 16), None), "te": ((0, 19), None), "torchao": ((0, 14), None),
    "fp8": (None, None), "compressed-tensors": (None, None), "quanto": (None, None),
}


@pytest.mark.parametrize("version", [(0, 13, 2), (0, 15, 0), (0, 17, 1), (0, 18, 0), (0, 19, 1), (0, 20, 0), (0, 21, 2)])
def test_which_peft_version_wraps_each_family(version):
    for family in (*FAMILIES, TORCHAO):
        since, until = WRAPPED_SINCE[family.key]
        expected = since is not None and version >= since and (until is None or version < until)
        assert family.wraps(version) is expected, (family.key, version)


def test_the_docs_table_states_each_family():
    text = (REPO / "docs" / "quantized.md").read_text()
    for family in (*FAMILIES, TORCHAO):
        row = next((line for line in text.splitlines() if line.startswith(f"| `{family.key}`")), None)
        assert row is not None, family.key
        since, until = WRAPPED_SINCE[family.key]
        if since is None:
            assert "plain `lora.Linear`" in row, row
        else:
            assert f"{since[0]}.{since[1]}" in row and (until is None or f"< {until[0]}.{until[1]}" in row), row


# Where the installed PEFT dispatches each family (peft/tuners/lora/<module>.py).
DISPATCH = {
    "bnb-8bit": ("bnb", "dispatch_bnb_8bit"), "bnb-4bit": ("bnb", "dispatch_bnb_4bit"), "eetq": ("eetq", "dispatch_eetq"),
    "eetq-transformers": ("eetq", "dispatch_eetq"), "aqlm": ("aqlm", "dispatch_aqlm"), "awq-gptqmodel": ("awq", "dispatch_awq"),
    "awq-autoawq": ("awq", "dispatch_awq"), "gptq-gptqmodel": ("gptq", "dispatch_gptq"),
    "gptq-autogptq": ("gptq", "dispatch_gptq"), "hqq": ("hqq", "dispatch_hqq"), "inc": ("inc", "dispatch_inc"),
    "torchao": ("torchao", "dispatch_torchao"), "te": ("te", "dispatch_transformer_engine"),
}
# What the dispatcher tests, where that is not one of the family's class names.
NEEDLES = {"eetq": ("EetqLinear", "eetq_classes"), "eetq-transformers": ("eetq_classes",), "awq-gptqmodel": ("awq_layer", "AwqGEMMQuantLinear"),
           "gptq-autogptq": ("get_auto_gptq_quant_linear",)}


@pytest.mark.parametrize("family", [f for f in (*FAMILIES, TORCHAO) if f.wraps()], ids=lambda f: f.key)
def test_the_installed_peft_dispatches_each_family_it_is_said_to_wrap(family):
    module_name, dispatcher = DISPATCH[family.key]
    source = inspect.getsource(getattr(importlib.import_module(f"peft.tuners.lora.{module_name}"), dispatcher))
    assert any(needle in source for needle in NEEDLES.get(family.key, family.classes)), source
    assert family.wrapper.rsplit(".", 1)[1] in inspect.getsource(importlib.import_module(f"peft.tuners.lora.{module_name}"))
    dispatchers = inspect.getsource(importlib.import_module("peft.tuners.lora.model").LoraModel._create_new_module)
    assert dispatcher in dispatchers


def test_families_are_matched_by_package_and_class_name():
    # a class of that name in another package is not a quantized layer
    Linear4bit = type("Linear4bit", (), {"__module__": "mypackage.layers"})
    assert family_of_class(Linear4bit) is None
    if HAS_BNB:
        import bitsandbytes as bnb

        assert family_of_class(bnb.nn.Linear4bit).key == "bnb-4bit"
        assert family_of_class(bnb.nn.LinearNF4).key == "bnb-4bit"  # subclasses too
        assert family_of_class(bnb.nn.Linear8bitLt).key == "bnb-8bit"


# ---------------------------------------------------------------------------- the quantized atom

@pytest.mark.parametrize("query, canonical", [
    ("quantized", "quantized"), ("linear & QUANTIZED", "linear & quantized"), ("not quantized", "!quantized"),
])
def test_quantized_atom_round_trips(query, canonical):
    parsed = ts.parse(query)
    assert str(parsed) == canonical and ts.parse(str(parsed)) == parsed
    assert ts.Selector.model_validate_json(parsed.model_dump_json()) == parsed


def test_quantized_on_a_float_model_is_empty_and_says_why():
    model = demo()
    sel = select(model).linear().quantized()
    assert sel.selector == ts.parse("linear & quantized") and sel.names() == []
    assert "none of the candidates is a quantized layer" in explain_empty(sel.resolution())
    assert "quantization_config" in explain_empty(sel.resolution())


@pytest.mark.parametrize("weight", ["torchao", "plain"])
def test_an_nn_linear_with_a_torchao_weight_is_quantized(monkeypatch, weight):
    # torchao quantizes in place: the layer stays an nn.Linear, its weight becomes a torchao tensor
    # subclass. torchao is not installed here, so the subclass is one of the same name and package;
    # loading it puts `torchao` in sys.modules, as importing the real one does (the atom looks at
    # weights only then).
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    if weight == "torchao":
        monkeypatch.setitem(sys.modules, "torchao", type(sys)("torchao"))
        subclass = type("AffineQuantizedTensor", (torch.Tensor,), {"__module__": "torchao.dtypes"})
        model[1].weight = nn.Parameter(torch.empty(2, 2).as_subclass(subclass), requires_grad=False)
    assert select(model, "quantized").names() == (["1"] if weight == "torchao" else [])


def test_quantized_atom_needs_no_value():
    with pytest.raises(ts.QuerySyntaxError, match="`quantized` takes no value"):
        ts.parse("quantized:4bit")


# ---------------------------------------------------------------------------- meta builds from config.json

def _config_dir(tmp_path, quantization_config, base=None):
    data = dict(base or LLAMA)
    if quantization_config is not None:
        data["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(data))
    return tmp_path


def _llava_base():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    text = {k: v for k, v in LLAMA.items() if k not in ("model_type", "architectures")}
    return LlavaConfig(text_config=LlamaConfig(**text).to_dict(), architectures=["LlavaForConditionalGeneration"],
                       vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                      num_attention_heads=2, image_size=16, patch_size=8).to_dict(),
                       image_token_index=127).to_dict()


BNB4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
BUILT = [
    # (id, base, quantization_config, quantized class, left in full precision, quantized) — queries on the float model
    ("bnb-4bit-skip", None, {**BNB4, "llm_int8_skip_modules": ["down_proj"]}, "Linear4bit",
     "glob:**.down_proj", "linear - glob:**.down_proj"),
    ("bnb-8bit", None, {"quant_method": "bitsandbytes", "load_in_8bit": True}, "Linear8bitLt", "glob:lm_head", "linear"),
    ("llava-bnb-4bit", "llava", {**BNB4, "llm_int8_skip_modules": ["model.vision_tower", "model.multi_modal_projector"]},
     "Linear4bit", "linear & (under:vision_tower | under:multi_modal_projector)", "linear & under:language_model"),
    ("fp8", None, {"quant_method": "fp8", "weight_block_size": [32, 32], "modules_to_not_convert": ["gate_proj"]},
     "FP8Linear", "glob:**.gate_proj", "linear - glob:**.gate_proj"),
]


@pytest.mark.parametrize("case, base, qc, qclass, kept, converted", BUILT, ids=[b[0] for b in BUILT])
def test_config_json_builds_as_its_checkpoint_loads(tmp_path, case, base, qc, qclass, kept, converted):
    """transformers' quantizer installs its classes on meta; the skip lists keep what they name in full precision."""
    if "bnb" in case and not HAS_BNB:
        pytest.skip("bitsandbytes is not installed")
    import torch

    from targetsel.cli.loading import load_model

    directory = _config_dir(tmp_path, qc, _llava_base() if base == "llava" else None)
    float_model = load_model(str(directory), quantize=False)
    model = load_model(str(directory))
    build = quantize_as_loaded(load_model(str(directory), quantize=False), str(directory))
    if case == "fp8" and not build.quantized:  # transformers 4.x's FP8 layers import triton (GPU only)
        assert "needs a package that is not installed here" in build.note and "triton" in build.note
        pytest.skip(f"this transformers cannot build FP8 layers here: {build.note}")
    assert build.quantized and set(build.classes) == {qclass}
    quantized = select(model, "quantized").names()
    assert {type(m).__name__ for m in select(model, "quantized").modules().values()} == {qclass}
    assert not select(float_model, "quantized").names()
    kept_names, converted_names = select(float_model, kept).names(), select(float_model, converted).names()
    assert kept_names and converted_names
    assert set(kept_names) <= set(build.full_precision) and not set(kept_names) & set(quantized)
    assert set(converted_names) <= set(quantized)
    assert [n for n, _ in model.named_modules()] == [n for n, _ in float_model.named_modules()]  # same names
    assert f"{sum(build.classes.values())} {qclass}" in build.note and "--no-quantize" in build.note
    if case == "fp8" and not torch.cuda.is_available():  # transformers would not load FP8 weights here as FP8
        assert "a GPU load has the fp8 layers shown" in build.note


def test_a_quantizer_that_fails_half_way_is_an_error_not_a_half_built_model():
    """A factory model (not a transformers PreTrainedModel) whose config asks for 4-bit: transformers'
    quantizer cannot prepare it, and the error says so instead of showing a half-converted model."""
    from torch import nn
    from transformers import LlamaConfig

    model = nn.Sequential(nn.Linear(64, 64))
    model.config = LlamaConfig(quantization_config=BNB4)
    with pytest.raises(ts.ModelLoadError, match=r"^cannot build cfg as its bitsandbytes 4-bit checkpoint loads: "
                                                r"transformers' quantizer failed \(.+\); pass --no-quantize"):
        quantize_as_loaded(model, "cfg")


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_a_meta_4bit_model_checks_clean_and_verifies_like_peft(tmp_path):
    from targetsel.cli.loading import load_model

    model = load_model(str(_config_dir(tmp_path, BNB4)))
    assert model.is_loaded_in_4bit is True
    sel = select(model, "linear")
    assert [f.code for f in check(model, sel)] == ["quantized-base"]
    assert sel.lora_params(8) == 8 * 2 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 2 + (128 + 64))
    rows = {r["pattern"]: r for r in summary_rows(sel.resolution())}
    assert rows["model.layers.{0,1}.mlp.{gate,up}_proj"]["params"] == 4 * 64 * 128
    assert rows["model.layers.{0,1}.mlp.{gate,up}_proj"]["class"] == "Linear4bit"
    config = ts.patch(LoraConfig(r=8), sel)
    fast, real = dry_run(model, config), dry_run(model, config, real=True)
    assert fast.how == "fast" and real.how == "peft" and fast.same_outcome(real) and real.modules == tuple(sel.names())


MISSING = [
    # (quant_method, its config, the package it needs)
    ("gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}, ("optimum", "gptqmodel")),
    ("awq", {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}, ("gptqmodel",)),
    ("compressed-tensors", {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {
        "g": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32}}}},
     ("compressed_tensors",)),
    ("torchao", {"quant_method": "torchao", "quant_type": {"default": {"_type": "Int4WeightOnlyConfig",
                                                                       "_data": {"group_size": 32}}}}, ("torchao",)),
]


@pytest.mark.parametrize("method, qc, packages", MISSING, ids=[m[0] for m in MISSING])
def test_a_quantizer_whose_package_is_missing_shows_the_float_model_and_says_so(tmp_path, method, qc, packages):
    if all(importlib.util.find_spec(p) is not None for p in packages):
        pytest.skip(f"{', '.join(packages)} installed: this machine builds the {method} layers")
    from targetsel.cli.loading import load_model

    model = load_model(str(_config_dir(tmp_path, qc)), quantize=False)
    build = quantize_as_loaded(model, "cfg")
    assert not build.quantized and build.method == method
    assert re.match(rf"cfg is quantized with {re.escape(method)}, but building its layers needs a package that is not "
                    r"installed here \(.+\): showing the float model, nn\.Linear where the checkpoint loads ", build.note)
    assert "Module names are the same" in build.note
    assert {type(m).__name__ for m in model.modules()} >= {"Linear"} and not select(model, "quantized").names()


def test_an_unknown_quant_method_shows_the_float_model_and_says_so(tmp_path):
    from targetsel.cli.loading import load_model

    model = load_model(str(_config_dir(tmp_path, {"quant_method": "no-such-method"})), quantize=False)
    build = quantize_as_loaded(model, "cfg")
    assert not build.quantized
    assert build.note.startswith("cfg is quantized with no-such-method, but transformers cannot set that method up "
                                 "here (Unknown quantization type")


def test_a_config_without_quantization_is_left_alone(tmp_path):
    from targetsel.cli.loading import load_model

    model = load_model(str(_config_dir(tmp_path, None)))
    assert quantize_as_loaded(model) == QuantizedBuild() and not select(model, "quantized").names()


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
@pytest.mark.parametrize("flag, klass, note", [([], "Linear4bit", True), (["--no-quantize"], "Linear", False)])
def test_cli_shows_the_quantized_model_unless_told_not_to(tmp_path, flag, klass, note):
    directory = _config_dir(tmp_path, {**BNB4, "llm_int8_skip_modules": ["lm_head", "down_proj"]})
    done = subprocess.run([sys.executable, "-m", "targetsel", "show", str(directory), "linear", "--format", "json", *flag],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    groups = json.loads(done.stdout)["groups"]
    assert {g["class"] for g in groups if "self_attn" in g["pattern"]} == {klass}
    assert {g["class"] for g in groups if "down_proj" in g["pattern"]} == {"Linear"}
    assert ("is quantized with bitsandbytes 4-bit: built as that checkpoint loads (12 Linear4bit; left in full "
            "precision: ") in done.stderr if note else "quantized with" not in done.stderr


# ---------------------------------------------------------------------------- PEFT versions


@pytest.mark.parametrize("version, says", [
    ((0, 21, 2), None), ((0, 17, 0), None), ((0, 22, 0), "newer than the newest version targetsel is tested with"),
    ((1, 0, 0), "newer than"), ((0, 16, 1), "older than the oldest version targetsel is tested with (0.17)"),
])
def test_untested_peft_versions_are_named(version, says):
    reason = peft_support.untested_peft(version)
    assert (reason is None) if says is None else (says in reason)


def test_an_untested_peft_warns_once(monkeypatch):
    monkeypatch.setattr(peft_support, "_warned", False)
    monkeypatch.setattr(peft_support, "installed_peft", lambda: (0, 99, 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_support.warn_if_untested()
        peft_support.warn_if_untested()
    assert [type(w.message) for w in caught] == [ts.TargetselWarning]
    assert "peft 0.99.0 is newer" in str(caught[0].message)


def test_the_pyproject_bounds_are_the_tested_versions():
    text = (REPO / "pyproject.toml").read_text()
    low = ".".join(str(v) for v in peft_support.TESTED_PEFT[0])
    assert re.search(rf'"peft>={re.escape(low)}(\.0)?"', text), "pyproject: peft>=LOWEST, no upper bound"
    assert installed_peft()[:2] <= peft_support.TESTED_PEFT[1]
