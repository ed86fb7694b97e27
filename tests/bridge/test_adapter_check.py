"""`check_adapter(model, adapter_dir)`: will a saved adapter load onto this model?

Every adapter here is saved by a real `PeftModel.save_pretrained` from a tiny transformers model
with real CPU weights, then checked against another class or size. Each verdict is held against
what the installed PEFT really does: `PeftModel.from_pretrained` on the same model, then
`load_adapter` for the keys it drops (unexpected) and the adapter weights it leaves unfilled
(missing), and `key_mapping=` for the rename the report suggests.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from targetsel import AdapterFileError, ConfigError, NotAModuleError, check_adapter
from targetsel.bridge.adapter_load import module_of_key
from targetsel.bridge.adapter_renames import key_mapping_for

TEXT = dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
VISION = dict(model_type="clip_vision_model", num_hidden_layers=1, hidden_size=16, intermediate_size=32,
              num_attention_heads=2, image_size=28, patch_size=14)
MOE = dict(TEXT, moe_intermediate_size=8, num_experts=4, num_experts_per_tok=2, head_dim=8, num_hidden_layers=1)


class ConvNet(nn.Module):
    """Not a transformers model: no conversion mapping, no base-model prefix; a conv and a linear."""

    def __init__(self, kernel=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel)
        self.head = nn.Linear(6, 4)


def build(kind: str) -> nn.Module:
    """A tiny model with real CPU weights (a few thousand parameters)."""
    torch.manual_seed(0)
    if kind == "conv3":
        return ConvNet(3)
    if kind == "conv5":
        return ConvNet(5)
    specs = {
        "qwen2": ("qwen2", "Qwen2ForCausalLM", TEXT),
        "qwen2-wide": ("qwen2", "Qwen2ForCausalLM", {**TEXT, "hidden_size": 48}),
        "qwen2-vocab": ("qwen2", "Qwen2ForCausalLM", {**TEXT, "vocab_size": 96}),
        "llava": ("llava", "LlavaForConditionalGeneration", dict(text_config=dict(TEXT, model_type="llama"),
                                                                  vision_config=VISION)),
        "llava-base": ("llava", "LlavaModel", dict(text_config=dict(TEXT, model_type="llama"), vision_config=VISION)),
        "llava-qwen2": ("llava", "LlavaForConditionalGeneration",
                        dict(text_config=dict(TEXT, model_type="qwen2"), vision_config={**VISION, "hidden_size": 24})),
        "qwen2-vl": ("qwen2_vl", "Qwen2VLForConditionalGeneration",
                     dict(text_config=dict(TEXT, model_type="qwen2_vl_text"),
                          vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2))),
        "opt": ("opt", "OPTForCausalLM", dict(num_hidden_layers=2, hidden_size=32, ffn_dim=64, num_attention_heads=4,
                                             vocab_size=64, word_embed_proj_dim=32, max_position_embeddings=64)),
        "gpt2": ("gpt2", "GPT2LMHeadModel", dict(n_layer=1, n_embd=32, n_head=4, vocab_size=64, n_positions=32)),
        "moe4": ("qwen3_moe", "Qwen3MoeForCausalLM", MOE),
        "moe8": ("qwen3_moe", "Qwen3MoeForCausalLM", {**MOE, "num_experts": 8}),
    }
    model_type, cls, kwargs = specs[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(model_type, **kwargs)
        return getattr(transformers, cls)._from_config(config)


def save_adapter(path, kind: str, config: LoraConfig, *, bin_format: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(build(kind), config).save_pretrained(str(path), safe_serialization=not bin_format)
    return path


def rewrite_keys(path, rename):
    """The same tensors saved under other names, as an older library version wrote them."""
    file = path / "adapter_model.safetensors"
    state = load_file(str(file))
    save_file({rename(k): v for k, v in state.items()}, str(file))


def edit_config(path, **fields):
    file = path / "adapter_config.json"
    data = json.loads(file.read_text())
    data.update(fields)
    file.write_text(json.dumps(data))


def v4_llava(key: str) -> str:
    """transformers 4 names of LlavaForConditionalGeneration: `language_model.model.*`, `vision_tower.*`."""
    return (key.replace("base_model.model.model.language_model.", "base_model.model.language_model.model.")
               .replace("base_model.model.model.vision_tower.", "base_model.model.vision_tower."))


QV = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])

# id: (saved from, LoraConfig, post-processing of the saved adapter, checked on, expected)
CASES = {
    "same class: ok": ("llava", LoraConfig(**QV), None, "llava",
                       dict(ok=True, dead=0, unweighted=0, mismatches=0)),
    "embedding + modules_to_save, same class: ok": (
        "qwen2", LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"], modules_to_save=["lm_head"]), None, "qwen2",
        dict(ok=True, dead=0, unweighted=0, mismatches=0)),
    "head class saved, base class checked (model. prefix)": (
        "llava", LoraConfig(**QV), None, "llava-base",
        dict(ok=False, dead=12, unweighted=6, rule="base-model prefix 'model' removed", still_dead=0)),
    "base class saved, head class checked": (
        "llava-base", LoraConfig(**QV), None, "llava",
        # transformers' llava mapping renames these, but PEFT's load undoes a rename whose result is a
        # suffix of the saved key (`base_model.model.language_model.…` ends with `model.language_model.…`)
        dict(ok=False, dead=12, unweighted=6, rule="conversion mapping for LlavaForConditionalGeneration",
             still_dead=0)),
    "transformers 4 names: PEFT renames the LM, drops the vision tower": (
        "llava", LoraConfig(**QV), v4_llava, "llava",
        dict(ok=False, renamed=8, dead=4, unweighted=2, rule="conversion mapping for LlavaForConditionalGeneration",
             still_dead=0)),
    "CausalLM saved, Qwen2-VL checked (model.language_model drift)": (
        "qwen2", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj"]), None, "qwen2-vl",
        dict(ok=False, dead=12, unweighted=6, rule="conversion mapping for Qwen2VLForConditionalGeneration",
             still_dead=0)),
    "CausalLM saved, LLaVA checked: no mapping, inferred rewrite": (
        "qwen2", LoraConfig(**QV), None, "llava-qwen2",
        dict(ok=False, dead=8, unweighted=6, rule="inferred", still_dead=0)),
    "rank_pattern keyed by the old name: rename loads, rank differs": (
        "qwen2", LoraConfig(**QV, rank_pattern={"model.layers.0.self_attn.q_proj": 8}), None, "qwen2-vl",
        dict(ok=False, dead=8, unweighted=4, rule="Qwen2VLForConditionalGeneration", still_dead=0, still_mismatched=2)),
    "hidden size differs (in/out features)": (
        "qwen2", LoraConfig(**QV), None, "qwen2-wide",
        dict(ok=False, dead=0, mismatches=8, detail="in_features 32 saved, 48 here", error="size mismatch")),
    "vocabulary resized (embedding)": (
        "qwen2", LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"]), None, "qwen2-vocab",
        dict(ok=False, dead=0, mismatches=2, detail="num_embeddings 64 saved, 96 here", error="size mismatch")),
    "config r edited after saving (rank)": (
        "qwen2", LoraConfig(**QV), lambda p: edit_config(p, r=8), "qwen2",
        dict(ok=False, dead=0, mismatches=8, detail="rank 4 saved, 8 here", error="size mismatch")),
    "fused experts: ParamWrapper rank x experts": (
        "moe4", LoraConfig(r=2, target_modules=["q_proj"], target_parameters=["experts.gate_up_proj"]), None, "moe8",
        dict(ok=False, mismatches=2, detail="rank × experts 8 saved, 16 here", error="size mismatch")),
    "conv kernel differs, not a transformers model": (
        "conv3", LoraConfig(r=2, target_modules=["conv", "head"]), None, "conv5",
        dict(ok=False, dead=0, mismatches=1, detail="kernel 3 saved, 5 here", error="size mismatch")),
    "config targets a module the model lacks (gate_proj on OPT)": (
        "qwen2", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj"]), None, "opt",
        # OPT's v_proj is 32 wide, Qwen2's (grouped-query attention) 16: renamed, those two lora_B still differ
        dict(ok=False, dead=12, unmatched=("gate_proj",), rule="inferred", still_dead=4, still_mismatched=2)),
    "no target matches (GPT-2): from_pretrained raises": (
        "qwen2", LoraConfig(**QV), None, "gpt2",
        dict(ok=False, dead=8, unmatched=("q_proj", "v_proj"), error="not found in the base model")),
    "modules_to_save weights under the old name: from_pretrained raises KeyError": (
        "llava", LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["embed_tokens"]), None, "llava-base",
        dict(ok=False, dead=7, error="KeyError", rule="base-model prefix 'model' removed", still_dead=0)),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each case's adapter, saved once."""
    out = {}
    for case, (source, config, post, _, _) in CASES.items():
        path = save_adapter(tmp_path_factory.mktemp("adapter"), source, config)
        if post is not None:
            if post is v4_llava:
                rewrite_keys(path, post)
            else:
                post(path)
        out[case] = path
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_report(case, saved):
    _, _, _, target, want = CASES[case]
    report = check_adapter(build(target), saved[case])
    assert report.ok is want["ok"], str(report)
    for field in ("dead", "unweighted", "mismatches"):
        if field in want:
            assert len(getattr(report, field)) == want[field], (field, str(report))
    assert len(report.renamed) == want.get("renamed", 0)
    assert report.unmatched_targets == want.get("unmatched", ())
    if "error" in want:
        assert want["error"] in report.error
    else:
        assert report.error is None
    if "detail" in want:
        assert want["detail"] in {m.detail for m in report.mismatches}, str(report)
    if "rule" in want:
        t = report.translation
        assert t is not None and want["rule"] in t.rule, str(report)
        assert len(t.still_dead) == want["still_dead"]
        assert len(t.still_mismatched) == want.get("still_mismatched", 0)
    elif report.dead:
        assert report.translation is None
    text = str(report)
    assert report.model_class in text and ("ok, every saved key loads" in text) is want["ok"]


def _real_load(model, path, **kwargs):
    """PEFT itself: from_pretrained, then the same adapter once more through load_adapter for its
    load result (PeftModel.from_pretrained drops unexpected keys without a word)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(model, str(path), **kwargs)
        result = peft_model.load_adapter(str(path), adapter_name="again", **kwargs)
    tuner = PEFT_TYPE_TO_TUNER_MAPPING[peft_model.peft_config["default"].peft_type]
    dead = {tuner._remove_adapter_name_from_key(k, "again") for k in result.unexpected_keys}
    unweighted = {module_of_key(tuner._remove_adapter_name_from_key(k, "again")) for k in result.missing_keys}
    return dead, unweighted


@pytest.mark.parametrize("case", list(CASES))
def test_report_agrees_with_a_real_peft_load(case, saved):
    _, _, _, target, _ = CASES[case]
    report = check_adapter(build(target), saved[case])
    if report.error:
        with pytest.raises(Exception) as raised:
            _real_load(build(target), saved[case])
        assert type(raised.value).__name__ == report.error.split(":")[0]
    else:
        dead, unweighted = _real_load(build(target), saved[case])
        assert dead == set(report.dead)
        assert unweighted == set(report.unweighted)
    t = report.translation
    if t is not None:  # the suggested key_mapping does what the report says
        if t.still_mismatched:
            with pytest.raises(RuntimeError, match="size mismatch"):
                _real_load(build(target), saved[case], key_mapping=dict(t.key_mapping))
        else:
            dead, _ = _real_load(build(target), saved[case], key_mapping=dict(t.key_mapping))
            assert dead == set(t.still_dead)


def test_transformers4_mixtral_experts_are_fused_on_load(tmp_path):
    """Per-expert LoRA keys saved under transformers 4 (`block_sparse_moe.experts.N.w1`) meet a
    transformers-5 Mixtral whose experts are one fused parameter: PEFT's load converts them (on meta
    tensors here, through its own PeftConcatenate), so they count as loaded, not dropped."""
    kwargs = dict(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_local_experts=2, num_experts_per_tok=1,
                  num_attention_heads=2, num_key_value_heads=1, vocab_size=32, head_dim=8)
    config = transformers.AutoConfig.for_model("mixtral", **kwargs)
    LoraConfig(r=2, target_modules=["q_proj", "w1", "w2", "w3"]).save_pretrained(str(tmp_path))
    prefix = "base_model.model.model.layers.0."
    state = {prefix + "self_attn.q_proj.lora_A.weight": torch.randn(2, 16),
             prefix + "self_attn.q_proj.lora_B.weight": torch.randn(16, 2)}
    for expert in range(2):
        for name, (fan_in, fan_out) in {"w1": (16, 32), "w3": (16, 32), "w2": (32, 16)}.items():
            state[f"{prefix}block_sparse_moe.experts.{expert}.{name}.lora_A.weight"] = torch.randn(2, fan_in)
            state[f"{prefix}block_sparse_moe.experts.{expert}.{name}.lora_B.weight"] = torch.randn(fan_out, 2)
    save_file(state, str(tmp_path / "adapter_model.safetensors"))
    with torch.device("meta"):
        report = check_adapter(transformers.MixtralForCausalLM._from_config(config), tmp_path)
    assert report.ok, str(report)
    assert (report.loaded, len(report.fused), report.dead, report.unmatched_targets) == (14, 12, (), ())
    assert "fused on load by transformers' conversion (12 keys" in str(report)
    dead, unweighted = _real_load(transformers.MixtralForCausalLM._from_config(config), tmp_path)
    assert (dead, unweighted) == (set(), set())


def test_bin_adapter_reads_like_safetensors(tmp_path):
    a = save_adapter(tmp_path / "st", "llava", LoraConfig(**QV))
    b = save_adapter(tmp_path / "bin", "llava", LoraConfig(**QV), bin_format=True)
    assert (b / "adapter_model.bin").is_file() and not (b / "adapter_model.safetensors").exists()
    model = build("llava-base")
    first, second = check_adapter(model, a), check_adapter(model, b)
    assert second.weights_file == "adapter_model.bin"
    assert (first.dead, first.unweighted, first.translation) == (second.dead, second.unweighted, second.translation)
    assert len(second.dead) == 12 and second.translation is not None


def test_config_file_path_is_accepted_and_text_is_grouped(saved):
    path = saved["CausalLM saved, Qwen2-VL checked (model.language_model drift)"]
    report = check_adapter(build("qwen2-vl"), path / "adapter_config.json")
    text = str(report)
    assert report.adapter == str(path) and report.saved_from == "Qwen2ForCausalLM"
    assert "12 of 12 saved keys would be dropped" in text
    assert "DROPPED, no module here: 12 keys on 6 modules: model.layers.{0,1}.mlp.gate_proj (2), " \
           "model.layers.{0,1}.self_attn.{q,v}_proj (4)" in text
    assert "key_mapping={'^model\\\\.layers\\\\.': 'model.language_model.layers.'}" in text
    assert json.loads(json.dumps(report.to_dict()))["translation"]["key_mapping"] == {
        "^model\\.layers\\.": "model.language_model.layers."}


@pytest.mark.parametrize(
    "key, module",
    [
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj"),
        ("base_model.model.model.embed_tokens.lora_embedding_B", "model.embed_tokens"),
        ("base_model.model.model.embed_tokens.base_layer.weight", "model.embed_tokens"),
        ("base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight", "model.layers.0.mlp.experts"),
        ("base_model.model.conv.lora_magnitude_vector", "conv"),
        ("base_model.model.lm_head.weight", "lm_head"),
        ("base_model.model.embed.token_adapter.trainable_tokens_delta", "embed"),
    ],
)
def test_module_of_key(key, module):
    assert module_of_key(key) == module


@pytest.mark.parametrize(
    "pairs, mapping",
    [
        ({"base_model.model.model.layers.0.q.lora_A.weight": "model.language_model.layers.0.q.lora_A.weight"},
         {"^model\\.layers\\.": "model.language_model.layers."}),
        ({"base_model.model.vision_tower.a.lora_A.weight": "model.vision_tower.a.lora_A.weight"},
         {"^vision_tower\\.": "model.vision_tower."}),
        ({"base_model.model.a.b": "c.d"}, {"^a\\.b$": "c.d"}),
    ],
)
def test_key_mapping_for(pairs, mapping):
    assert key_mapping_for(pairs) == mapping


def test_key_mapping_needs_peft_prefixed_keys_as_peft_does():
    from targetsel.bridge.adapter_load import apply_key_mapping

    assert apply_key_mapping({"base_model.model.a.b": 1, "base_model.c": 2}, {"^a\\.": "x.", "^c": "y"}) == {
        "base_model.model.x.b": 1, "base_model.y": 2}
    with pytest.raises(ValueError, match=r"key_mapping needs keys under 'base_model.', got 'a.b'"):
        apply_key_mapping({"a.b": 1}, {"^a": "x"})


# ---------------------------------------------------------------------------- every error branch


def _corrupt(path, data: bytes):
    path.mkdir()
    LoraConfig(**QV).save_pretrained(str(path))
    (path / "adapter_model.safetensors").write_bytes(data)
    return path


def _header(obj) -> bytes:
    raw = json.dumps(obj).encode()
    return len(raw).to_bytes(8, "little") + raw


ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
CORRUPT = {
    "shorter than the length": (b"\x01\x02", r"shorter than the 8-byte header length"),
    "length past the end": ((10**6).to_bytes(8, "little") + b"{}", r"header claims 1000000 bytes"),
    "not json": (b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{", r"its header is not JSON"),
    "not an object": (_header([1, 2]), r"a JSON list, not an object"),
    "entry without dtype": (_header({"k": {"shape": [1]}}) + b"\0" * 4, r"entry 'k' lacks dtype"),
    "unknown dtype": (_header({"k": {**ENTRY, "dtype": "Q7"}}) + b"\0" * 16, r"unknown dtype 'Q7'"),
    "bad shape": (_header({"k": {**ENTRY, "shape": [2, -1]}}) + b"\0" * 16, r"malformed shape"),
    "offsets past the data": (_header({"k": ENTRY}) + b"\0" * 8, r"outside the 8 data bytes"),
    "size disagrees with shape": (_header({"k": {**ENTRY, "shape": [3, 2]}}) + b"\0" * 16, r"does not fill its 16 bytes"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_safetensors_header(case, tmp_path):
    data, message = CORRUPT[case]
    path = _corrupt(tmp_path / "a", data)
    with pytest.raises(AdapterFileError, match=r"is not a valid safetensors file: .*" + message):
        check_adapter(build("qwen2"), path)


def _config_only(path):
    path.mkdir()
    LoraConfig(**QV).save_pretrained(str(path))
    return path


def _with_config_text(path, text):
    path.mkdir()
    (path / "adapter_config.json").write_text(text)
    save_file({"x": torch.zeros(1)}, str(path / "adapter_model.safetensors"))
    return path


def _legacy_bin(path):
    _config_only(path)
    torch.save({"x": torch.zeros(1)}, str(path / "adapter_model.bin"), _use_new_zipfile_serialization=False)
    return path


def _garbage_zip_bin(path):
    _config_only(path)
    (path / "adapter_model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    return path


def _list_bin(path):
    _config_only(path)
    torch.save([torch.zeros(1)], str(path / "adapter_model.bin"))
    return path


def _empty_dir(path):
    path.mkdir()
    (path / "README.md").write_text("hi")
    return path


BAD_ADAPTERS = {
    "no such directory": (lambda p: p / "missing", r"^no adapter at .*missing.*save_pretrained"),
    "directory without adapter_config.json": (_empty_dir, r"holds no adapter_config.json \(it holds 1 entries: README.md\)"),
    "config but no weights": (_config_only, r"has adapter_config.json but no weights: neither adapter_model.safetensors"),
    "config is not JSON": (lambda p: _with_config_text(p, "{"), r"cannot read .* as JSON"),
    "config without peft_type": (lambda p: _with_config_text(p, "{}"), r"is not a PEFT adapter config: it has no 'peft_type'"),
    "unknown peft_type": (lambda p: _with_config_text(p, '{"peft_type": "NOPE"}'), r"unknown peft_type 'NOPE'; the installed peft knows .*LORA"),
    "peft rejects the config": (lambda p: _with_config_text(p, '{"peft_type": "LORA", "use_dora": true, "use_rslora": 3, "lora_dropout": "x", "layers_pattern": "layers"}'),
                                r"peft rejects this config"),
    "legacy non-zip .bin": (_legacy_bin, r"legacy \(non-zip\) PyTorch file: its keys cannot be read without loading"),
    "corrupt zip .bin": (_garbage_zip_bin, r"cannot be read as a PyTorch state dict"),
    ".bin holding a list": (_list_bin, r"does not hold a state dict \(a mapping of names to tensors\)"),
}


@pytest.mark.parametrize("case", list(BAD_ADAPTERS))
def test_bad_adapter(case, tmp_path):
    make, message = BAD_ADAPTERS[case]
    path = make(tmp_path / "a")
    with pytest.raises(AdapterFileError, match=message):
        check_adapter(build("qwen2"), path)


@pytest.mark.parametrize("adapter", [None, 3, "", "   "])
def test_adapter_argument_must_be_a_path(adapter):
    with pytest.raises(AdapterFileError, match=r"needs the adapter's directory or its adapter_config.json path"):
        check_adapter(build("qwen2"), adapter)


def test_model_must_be_a_module(saved):
    with pytest.raises(NotAModuleError, match=r"^check_adapter\(\) needs a torch.nn.Module, got str$"):
        check_adapter("qwen2", saved["same class: ok"])


def test_model_already_adapted_is_refused(saved):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapted = get_peft_model(build("qwen2"), LoraConfig(**QV))
    with pytest.raises(ConfigError, match=r"already holds PEFT adapter layers"):
        check_adapter(adapted, saved["same class: ok"])


# ---------------------------------------------------------------------------- the command line

CLI_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "PYTHONHASHSEED": "0"}


def _config_dir(path, kind: str):
    """A model directory as a user has it: config.json naming the class to build (no weights)."""
    model = build(kind)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(path))
    return path


def test_cli_exit_codes_and_output(tmp_path, saved):
    """Two real `python -m targetsel check-adapter` processes, run side by side: ok (0) and weights
    dropped (1, JSON); bad input (2) runs in-process below."""
    import os
    import subprocess
    import sys

    adapter = saved["CausalLM saved, Qwen2-VL checked (model.language_model drift)"]
    same, drift = _config_dir(tmp_path / "qwen2", "qwen2"), _config_dir(tmp_path / "qwen2vl", "qwen2-vl")
    runs = {
        "ok": ["check-adapter", str(adapter), "--model", str(same)],
        "dropped": ["check-adapter", str(adapter / "adapter_config.json"), "-m", str(drift), "--format", "json"],
    }
    env = {**os.environ, **CLI_ENV}
    procs = {name: subprocess.Popen([sys.executable, "-m", "targetsel", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env) for name, args in runs.items()}
    done = {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}

    code, out, err = done["ok"]
    assert code == 0, err
    assert out.startswith(f"adapter {adapter} (LORA, 12 keys in adapter_model.safetensors, saved from Qwen2ForCausalLM) "
                          "on Qwen2ForCausalLM: ok, every saved key loads")
    code, out, err = done["dropped"]
    assert code == 1, err
    data = json.loads(out)
    assert (data["ok"], data["keys"], len(data["dead"]), data["model_class"]) == (False, 12, 12, "Qwen2VLForConditionalGeneration")
    assert data["translation"]["key_mapping"] == {"^model\\.layers\\.": "model.language_model.layers."}


def test_cli_in_process_text_and_bad_input(saved, tmp_path, capsys):
    from targetsel import cli

    adapter = saved["hidden size differs (in/out features)"]
    assert cli.main(["check-adapter", str(adapter), "--model", str(_config_dir(tmp_path / "wide", "qwen2-wide"))]) == 1
    out = capsys.readouterr().out
    assert "SHAPE MISMATCH, 8 keys" in out and "in_features 32 saved, 48 here" in out and "ERROR: " in out
    assert cli.main(["check-adapter", str(adapter), "--model", str(tmp_path / "no-model")]) == 2
    assert capsys.readouterr().err.startswith("targetsel: error: no such file or directory: ")
    assert cli.main(["check-adapter", str(tmp_path / "nope"), "--model", str(tmp_path / "wide")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("targetsel: error: no adapter at ")
    assert captured.err.count("\n") == 1


def test_prompt_learning_adapter_is_refused(tmp_path):
    """Prompt tuning adapts the input, not named modules: there is no module name to drift."""
    from peft import PromptTuningConfig

    PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4).save_pretrained(str(tmp_path))
    save_file({"prompt_embeddings": torch.zeros(4, 32)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match=r"^PromptTuningConfig \(.*PROMPT_TUNING\) has no target_modules field"):
        check_adapter(build("qwen2"), tmp_path)
