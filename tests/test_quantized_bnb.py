"""QLoRA with real bitsandbytes on CPU: a tiny Llama and a tiny LLaVA, loaded 4-bit and 8-bit by transformers.

Each case runs what a user does — select, check (no false findings), patch, a real get_peft_model,
two optimizer steps, save, reload onto a freshly loaded quantized base, audit — and pins the
numbers targetsel shows against what PEFT really built (adapter parameter counts, logical sizes).
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch import nn

if importlib.util.find_spec("bitsandbytes") is None:  # pragma: no cover - bitsandbytes is in the test extra
    pytest.skip("bitsandbytes is not installed: pip install -c constraints.txt -e '.[test]' installs it "
                "(these tests load real 4-bit and 8-bit models on CPU)", allow_module_level=True)

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from targetsel import audit, check, dry_run, patch, select  # noqa: E402
from targetsel.views.diagnose import explain_empty  # noqa: E402
from targetsel.views.display import summary_rows  # noqa: E402

TEXT = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1)  # bitsandbytes' CPU 4-bit kernel needs in_features >= its blocksize (64)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=16,
              patch_size=8, projection_dim=64)
# A LLaVA QLoRA recipe: the vision tower and projector stay in full precision, the tower is frozen.
LLAVA_SKIP = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny Llama and a tiny LLaVA with real (random) CPU weights, saved as float checkpoints."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("qlora")
    LlamaForCausalLM(LlamaConfig(**TEXT)).save_pretrained(root / "llama")
    LlavaForConditionalGeneration(LlavaConfig(
        text_config=LlamaConfig(**TEXT).to_dict(), vision_config=CLIPVisionConfig(**VISION).to_dict(),
        image_token_index=127)).save_pretrained(root / "llava")
    return root


def _load(checkpoints, arch: str, bits: int):
    from transformers import BitsAndBytesConfig, LlamaForCausalLM, LlavaForConditionalGeneration

    skip = LLAVA_SKIP if arch == "llava" else None
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                                llm_int8_skip_modules=skip) if bits == 4
             else BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip))
    cls = LlavaForConditionalGeneration if arch == "llava" else LlamaForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls.from_pretrained(checkpoints / arch, quantization_config=quant, device_map={"": "cpu"})
    if arch == "llava":
        model.model.vision_tower.requires_grad_(False)
    return model


CASES = [
    # (arch, bits, query, quantized class, selected, of them quantized)
    ("llama", 4, "linear", "Linear4bit", 14, 14),
    ("llama", 8, "linear", "Linear8bitLt", 14, 14),
    ("llava", 4, "linear - under:vision_tower", "Linear4bit", 16, 14),
    ("llava", 8, "linear - under:vision_tower", "Linear8bitLt", 16, 14),
]


@pytest.mark.parametrize("arch, bits, query, qcls, n_selected, n_quantized", CASES,
                         ids=[f"{c[0]}-{c[1]}bit" for c in CASES])
def test_qlora_round_trip(checkpoints, tmp_path, arch, bits, query, qcls, n_selected, n_quantized):
    model = _load(checkpoints, arch, bits)
    sel = select(model, query)
    assert len(sel) == n_selected
    assert len(select(model, f"({query}) & quantized")) == n_quantized
    assert {type(m).__name__ for m in select(model, "quantized").modules().values()} == {qcls}

    # check: the quantized base is explained (info), never a warning or an error
    findings = check(model, sel)
    assert [f.code for f in findings] == ["quantized-base"], [str(f) for f in findings]
    assert f"{qcls} ×{n_quantized} → peft.tuners.lora.bnb.{qcls}" in findings[0].message

    # sizes: logical shapes, and what LoRA adds exactly as PEFT builds it
    rows = {r["pattern"]: r for r in summary_rows(sel.resolution())}
    q_rows = [r for r in rows.values() if r["class"] == qcls]
    for row in q_rows:
        fan_in, fan_out = (int(x) for x in row["shape"].split("→"))
        assert row["params"] == row["count"] * fan_in * fan_out  # packed 4-bit storage is half of that

    config = patch(LoraConfig(r=4, lora_alpha=8), sel)
    assert dry_run(model, config, real=True).modules == tuple(sel.names())
    expected_lora = sel.lora_params(4)
    peft_model = get_peft_model(model, config)
    assert sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n) == expected_lora
    assert audit(peft_model, sel).ok
    wrappers = {type(m).__qualname__ for n, m in peft_model.named_modules() if n.endswith("q_proj") and "vision" not in n}
    assert wrappers == {qcls}  # PEFT's bitsandbytes layer (peft.tuners.lora.bnb), not a plain lora.Linear

    # two optimizer steps train the adapters
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainable.items() if "lora_B" in n}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    ids = torch.randint(0, 120, (2, 8), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "labels": ids}
    if arch == "llava":  # an image, so the (adapted, full-precision) projector gets gradients too
        ids[:, :4] = 127  # (16 / 8)² patches, one image token each
        inputs["pixel_values"] = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        loss = peft_model(**inputs).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(before[n], trainable[n]) for n in before)

    # save, reload onto a freshly loaded quantized base, audit again
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(_load(checkpoints, arch, bits), tmp_path / "adapter")
    assert audit(reloaded, sel).ok
    reloaded_b = dict(reloaded.named_parameters())
    assert all(torch.equal(trainable[n], reloaded_b[n]) for n in before)


def test_trainable_on_a_4bit_model_is_empty_and_says_why(checkpoints):
    model = _load(checkpoints, "llama", 4)
    sel = select(model, "linear & trainable")
    assert sel.is_empty()
    text = explain_empty(sel.resolution())
    assert "14 of the 14 candidates are quantized layers (Linear4bit ×14)" in text
    assert "frozen by design" in text and "`linear` or `quantized`" in text
    why = str(sel.explain("model.layers.0.self_attn.q_proj"))
    assert "0 of 1 parameters require grad (a quantized layer: its packed weight never requires grad)" in why
    # the trainable parts of a 4-bit model: what loading keeps in float (norms, embeddings, lm_head)
    assert select(model, "trainable & leaf").names()[:1] == ["model.embed_tokens"]


def test_frozen_tower_of_a_quantized_vlm_is_still_reported(checkpoints):
    """Quantized layers inside a region the user froze (the tower's float norms are frozen too) are
    the frozen-tower incident, not the QLoRA base: frozen-target still names them."""
    from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlavaForConditionalGeneration.from_pretrained(
            checkpoints / "llava", quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": "cpu"})
    model.model.vision_tower.requires_grad_(False)
    tower = select(model, "linear & under:vision_tower")
    assert {type(m).__name__ for m in tower.modules().values()} == {"Linear8bitLt"}
    by_code = {f.code: f for f in check(model, "linear")}
    assert set(by_code) == {"frozen-target", "quantized-base"}
    assert set(by_code["frozen-target"].modules) == set(tower.names())
    assert "inside the frozen model.vision_tower" in by_code["frozen-target"].message
    n_by_design = len(by_code["quantized-base"].modules)  # 14 (transformers 5) or 16 (4.57 quantizes the projector)
    assert (f"- under:model.vision_tower (not & trainable: that also drops the {n_by_design} quantized layers"
            in by_code["frozen-target"].message)  # `trainable` would empty a QLoRA selection
    assert not set(by_code["quantized-base"].modules) & set(tower.names())
    # everything frozen (prepare_model_for_kbit_training freezes the whole base): the QLoRA set-up, info only
    model.requires_grad_(False)
    assert [f.code for f in check(model, "linear - under:vision_tower")] == ["quantized-base"]


def _bnb_holder(flag: bool) -> nn.Module:
    import bitsandbytes as bnb

    holder = nn.Module()
    holder.proj = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
    holder.head = nn.Linear(64, 8)
    if flag:
        holder.is_loaded_in_4bit = True
    return holder


@pytest.mark.parametrize("flag, codes, wrapper", [
    (True, ["quantized-base"], "peft.tuners.lora.bnb.Linear4bit"),
    (False, ["subclass-target", "quantized-base"], "peft.tuners.lora.layer.Linear"),
])
def test_peft_dispatches_its_bnb_layer_only_with_the_loading_flag(flag, codes, wrapper):
    """PEFT's bitsandbytes dispatch reads model.is_loaded_in_4bit (transformers sets it); without it a
    Linear4bit is wrapped as a plain lora.Linear, and subclass-target says how to fix that."""
    model = _bnb_holder(flag)
    assert model.proj.weight.numel() == 64 * 64 // 2 and select(model, "quantized").lora_params(2) == 2 * 128
    findings = check(model, "quantized")
    assert sorted(f.code for f in findings) == sorted(codes)
    if not flag:
        sub = next(f for f in findings if f.code == "subclass-target")
        assert "only when model.is_loaded_in_4bit" in sub.message
    peft_model = get_peft_model(model, LoraConfig(target_modules=["proj"]))
    cls = type(peft_model.base_model.model.proj)
    assert f"{cls.__module__}.{cls.__qualname__}" == wrapper
