"""Wrapped and partitioned models in one process: DeepSpeed ZeRO-3 parameters, activation-checkpoint
wrappers, the refusal when no config can be exact, and the rank helpers without torch.distributed.

ZeRO-3 is simulated: `deepspeed` 0.19.8 installs on this CPU-only machine (from its sdist) but its
`init_distributed` JIT-compiles a C++ shared-memory op for the CPU accelerator, which did not finish
here, so no real ZeRO-3 run is possible. `partition()` leaves each parameter as
`deepspeed.zero.Init` does on a rank (deepspeed/runtime/zero/partition_parameters.py,
`_convert_to_deepspeed_param` and `free_param`): the local tensor empty, the real size in
`ds_shape` / `ds_numel`, `ds_status` NOT_AVAILABLE, a `ds_id`. FSDP1, FSDP2 and their checkpoint
wrappers under real torch.distributed are in tests/test_distributed.py.
"""

from __future__ import annotations

import enum
import io
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing, checkpoint_wrapper

import trainer_models as tm
from targetsel import ConfigError, TargetselError, audit, check, dry_run, patch, select, verify
from targetsel.model import ranks
from targetsel.model.index import get_index
from targetsel.model.wrappers import (FlatEntry, class_name, global_numel, global_shape, peft_view, unwrapped,
                                      user_class, user_name)
from targetsel.views.display import render_text, summary_rows


class ZeroParamStatus(enum.Enum):  # deepspeed.runtime.zero.partition_parameters.ZeroParamStatus
    AVAILABLE = 1
    NOT_AVAILABLE = 2
    INFLIGHT = 3


def partition(model: nn.Module) -> nn.Module:
    """Every parameter as ZeRO-3 leaves it on a rank between steps: empty locally, its size in ds_*."""
    for i, p in enumerate(model.parameters()):
        p.ds_shape, p.ds_numel, p.ds_id = p.shape, p.numel(), i
        p.ds_status, p.ds_persist = ZeroParamStatus.NOT_AVAILABLE, False
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)
    return model


def gpt2() -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=64)
    model = transformers.GPT2LMHeadModel(config)
    model.transformer.h[0].requires_grad_(False)  # a frozen block: grad state must survive partitioning
    return model


def llama() -> nn.Module:
    model = tm.tiny_llama_cpu()
    model.model.layers[0].mlp.requires_grad_(False)
    return model


ZERO3 = [(gpt2, "linear & trainable"), (gpt2, "glob:transformer.h.*.attn.c_attn"), (gpt2, "frozen"),
         (gpt2, "all"), (llama, "linear & trainable"), (llama, "glob:**.mlp.*"), (llama, "mixed")]


def facts(model, query: str) -> dict:
    sel = select(model, query)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = patch(LoraConfig(r=4, lora_alpha=8), sel)
        except TargetselError as exc:  # a refusal: the same on both
            config = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    targets = config if isinstance(config, str) else config.target_modules
    return {"names": sel.names(), "rows": summary_rows(sel.resolution()), "text": repr(sel),
            "lora_params": sel.lora_params(8), "lock": sel.lock()["hash"],
            "findings": [f.to_dict() for f in check(model, sel)],
            "targets": sorted(targets) if isinstance(targets, (set, list)) else targets,
            "verify": None if isinstance(config, str) else verify(model, config)}


@pytest.mark.parametrize("build,query", ZERO3, ids=[f"{b.__name__}-{q}" for b, q in ZERO3])
def test_zero3_partitioned_parameters_give_the_unpartitioned_answers(build, query):
    plain, partitioned = facts(build(), query), facts(partition(build()), query)
    assert partitioned == plain
    assert plain["names"] and any(row["params"] for row in plain["rows"])  # sizes were there to lose


@pytest.mark.parametrize("build,query,r", [(gpt2, "linear & trainable", 8), (llama, "glob:**.self_attn.{q,v}_proj", 4)])
def test_zero3_counts_agree_with_peft_on_the_partitioned_model(build, query, r):
    """PEFT counts a partitioned parameter by ds_numel (get_nb_trainable_parameters); so does targetsel."""
    from targetsel.views.display import summarize

    model = partition(build())
    sel = select(model, query)
    total, lora = summarize(sel.resolution()).model_params, sel.lora_params(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = patch(LoraConfig(r=r, lora_alpha=8), sel)
        peft_model = get_peft_model(model, config)
    assert audit(peft_model, sel).ok
    assert peft_model.get_nb_trainable_parameters() == (lora, total + lora)
    assert lora > 0 and total > 10_000


@pytest.mark.parametrize("shape_of,value", [
    (lambda: torch.zeros(3, 4), ((3, 4), 12)),
    (lambda: partition(nn.Linear(4, 3)).weight, ((3, 4), 12)),  # ZeRO-3: local numel 0
    (lambda: FlatEntry(torch.zeros(20), (2, 5)), ((2, 5), 10)),  # one original inside an FSDP1 flat parameter
])
def test_global_shape_and_numel(shape_of, value):
    t = shape_of()
    assert (global_shape(t), global_numel(t)) == value


# ---------------------------------------------------------------------------- checkpoint wrappers


def checkpointed(check_fn) -> nn.Module:
    model = tm.tiny_llama_cpu()
    apply_activation_checkpointing(model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=check_fn)
    return model


def decoder_layers(m) -> bool:
    return type(m).__name__ == "LlamaDecoderLayer"


@pytest.mark.parametrize("query", ["linear & trainable", "glob:model.layers.1.self_attn.*", "layers:0 & linear",
                                   "type:=LlamaDecoderLayer", "under:model.layers.1.mlp"])
def test_a_query_for_the_plain_model_selects_the_same_modules_under_checkpoint_wrappers(query):
    plain, wrapped = tm.tiny_llama_cpu(), checkpointed(decoder_layers)
    assert any("_checkpoint_wrapped_module" in n for n, _ in wrapped.named_modules())
    a, b = select(plain, query), select(wrapped, query)
    assert b.names() == a.names() and b.names()
    assert repr(b) == repr(a) and b.lock()["hash"] == a.lock()["hash"] and b.lora_params(8) == a.lora_params(8)


@pytest.mark.parametrize("query", ["linear & trainable", "glob:model.layers.1.self_attn.*", "layers:0 & linear"])
def test_the_config_is_exact_before_and_after_wrapping_and_peft_adapts_it_on_both(query):
    plain, wrapped = tm.tiny_llama_cpu(), checkpointed(decoder_layers)
    sel = select(wrapped, query)
    lock = sel.lock()
    config = patch(LoraConfig(r=4), sel)
    assert verify(wrapped, config) == sel.names() == verify(plain, config)
    assert audit(get_peft_model(wrapped, config), lock).ok  # PEFT on the wrapped model
    peft_model = get_peft_model(plain, config)  # PEFT first, wrappers after (the usual order)
    apply_activation_checkpointing(peft_model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=decoder_layers)
    assert audit(peft_model, lock).ok


def decoder_layers_and_mlps(m) -> bool:
    return type(m).__name__ in ("LlamaDecoderLayer", "LlamaMLP")


@pytest.mark.parametrize("config,expect", [
    # a name that is a wrapper's on the wrapped model: only PEFT itself can say what happens (it refuses)
    (LoraConfig(target_modules=["mlp"]), dict(how="peft", error="ValueError: Target module CheckpointWrapper(")),
    # modules_to_save on a wrapped model: PEFT's own _set_trainable, names reported as on the plain model
    (LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]),
     dict(how="peft", modules=("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"),
          saved=("lm_head",), reloads=None)),
    # names only: the fast path, matched against the wrapped model's own names
    (LoraConfig(target_modules=["q_proj"]), dict(how="fast", modules=("model.layers.0.self_attn.q_proj",
                                                                       "model.layers.1.self_attn.q_proj"))),
])
def test_dry_run_on_a_wrapped_model_is_what_peft_does_there(config, expect):
    result = dry_run(checkpointed(decoder_layers_and_mlps), config)
    for field, value in expect.items():
        got = getattr(result, field)
        assert got.startswith(value) if field == "error" else got == value, field


def q_proj_layers(m) -> bool:
    return isinstance(m, nn.Linear) and m.out_features == 32 and m.in_features == 32


@pytest.mark.parametrize("terminal", [
    lambda sel: patch(LoraConfig(r=4), sel),
    lambda sel: sel.to_peft(),
    lambda sel: sel.to_peft("regex"),
    lambda sel: sel.regex(),
])
def test_no_config_can_be_exact_when_a_selected_layer_is_itself_wrapped(terminal):
    # q_proj and o_proj are wrapped themselves: on the wrapped model their name is the wrapper's
    wrapped = checkpointed(q_proj_layers)
    sel = select(wrapped, "glob:**.self_attn.q_proj")
    assert sel.names() == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(ConfigError, match=r"^2 selected module\(s\) of this wrapped model have, on the plain "
                                             r"model, the name of a wrapper .* Select and patch on the model before "
                                             r"wrapping it"):
        terminal(sel)


def test_wrapping_in_place_after_a_selection_is_noticed():
    model = tm.tiny_llama_cpu()
    sel = select(model, "linear & layers:1")
    before = sel.names()
    assert peft_view(get_index(model)) is None
    apply_activation_checkpointing(model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=decoder_layers)
    assert sel.names() == before and peft_view(get_index(model)) is not None
    assert verify(model, patch(LoraConfig(), sel), real=True) == before  # a real injection, named as on the plain model


@pytest.mark.parametrize("name,plain", [
    ("model.layers.0._checkpoint_wrapped_module.mlp", "model.layers.0.mlp"),
    ("_fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.self_attn.q_proj",
     "model.layers.0.self_attn.q_proj"),
    ("_fsdp_wrapped_module", ""),
    ("model.my_wrapped_module.x", "model.my_wrapped_module.x"),
])
def test_user_name(name, plain):
    assert user_name(name) == plain


def test_user_class_and_class_name_see_through_fsdp2_and_wrappers():
    from torch.distributed.fsdp import FSDPModule

    dynamic = type("FSDPLinear", (FSDPModule, nn.Linear), {})  # what fully_shard makes of nn.Linear
    assert user_class(dynamic) is nn.Linear and user_class(nn.Linear) is nn.Linear
    wrapped = checkpoint_wrapper(nn.Linear(2, 2))
    assert class_name(wrapped) == "Linear" and unwrapped(wrapped) is wrapped._checkpoint_wrapped_module


# ---------------------------------------------------------------------------- ranks


def test_without_torch_distributed_this_process_is_the_main_one():
    assert (ranks.rank(), ranks.world_size(), ranks.is_main_process()) == (0, 1, True)
    out = io.StringIO()
    assert ranks.print_once("table", file=out) and out.getvalue() == "table\n"
    with pytest.warns(UserWarning, match="^shown$"):
        ranks.warn_once("shown")


def test_show_prints_the_display():
    sel = select(tm.tiny_llama_cpu(), "linear & layers:0")
    out = io.StringIO()
    sel.show(r=8, file=out)
    assert out.getvalue() == render_text(sel.resolution(), r=8) + "\n" and "LoRA r=8 adds" in out.getvalue()
