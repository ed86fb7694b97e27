"""Two real torch.distributed ranks (gloo, CPU, loopback) that shard models and record what targetsel answers.

Run by tests/test_distributed.py as `python tests/distributed_worker.py OUT_DIR`: it spawns WORLD
processes with `torch.multiprocessing.spawn`, each builds a tiny Llama (LlamaConfig, real CPU
weights) and the demo VLM, shards them with FSDP2 (`fully_shard`) and FSDP1
(`FullyShardedDataParallel`, `use_orig_params` True and False, with activation-checkpoint
wrappers), and writes everything targetsel says about the plain and the sharded models — names,
display, counts, `lora_params`, lock, `patch()` config, `verify()`, findings — to OUT_DIR/rank<R>.json.
Then the PEFT flows: `get_peft_model` on the rank-local model with the config patched on the
sharded one, wrapped again, `audit()` and `TargetselCallback` on every rank, one training step.
A rank that fails writes its traceback to OUT_DIR/rank<R>.error.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import sys
import traceback
import warnings

WORLD = 2
QUERIES = {
    "llama": ["linear & trainable", "glob:model.layers.1.self_attn.*", "linear & layers:0 & !glob:**.mlp.*",
              "type:=LlamaDecoderLayer", "all"],
    "demo": ["linear & trainable - type:PLoRA - under:(type:PLoRA)", "glob:vision_tower.layers.1.self_attn.*",
             "component:vision & leaf", "frozen", "type:=TextLayer"],
}
WRAPPINGS = ("plain", "fsdp2", "fsdp1", "fsdp1-flat")


def build(kind: str, device: str = "cpu"):
    """The model with real weights (the same on every rank, as a checkpoint load gives), or on "meta"."""
    import torch

    torch.manual_seed(0)
    if kind == "llama":
        import transformers

        config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
                                          max_position_embeddings=64)
        with torch.device(device):
            return transformers.LlamaForCausalLM(config)
    from targetsel.demo import build_demo_model

    return build_demo_model(device=device, vocab=256, d_vision=32, d_text=64, vision_layers=2, text_layers=2)


def blocks(model):
    """The units a training script shards: decoder layers (and the frozen vision tower)."""
    inner = getattr(model, "base_model", None)
    model = inner.model if inner is not None and hasattr(inner, "peft_config") else model
    if hasattr(model, "language_model"):
        return [*model.language_model.layers, model.vision_tower]
    return list(model.model.layers)


def checkpointed(module) -> bool:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from targetsel.demo import TextMLP

    return isinstance(module, (LlamaDecoderLayer, TextMLP))


def wrap(model, how: str, peft: bool = False):
    """Shard `model` as a training script would; FSDP1 gets activation checkpointing too (the demo's
    MLPs before wrapping, Llama's decoder layers inside the FSDP units after it)."""
    import torch
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (apply_activation_checkpointing,
                                                                             checkpoint_wrapper)
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    if how == "plain":
        return model
    if how == "fsdp2":
        for block in blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    demo = hasattr(blocks(model)[-1], "patch_embed")
    if demo:
        apply_activation_checkpointing(model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=checkpointed)
    if peft:  # PEFT's own policy: LoRA weights in units of their own (FSDP1 needs uniform requires_grad per unit)
        from peft.utils.other import fsdp_auto_wrap_policy

        policy = fsdp_auto_wrap_policy(model)
    else:
        policy = ModuleWrapPolicy({type(b) for b in blocks(model)})
    wrapped = FullyShardedDataParallel(model, auto_wrap_policy=policy, use_orig_params=how == "fsdp1",
                                       device_id=torch.device("cpu"))
    if not demo:
        apply_activation_checkpointing(wrapped, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=checkpointed)
    return wrapped


def outcome(fn):
    """fn()'s value, or the TargetselError it raises as 'Class: first line'."""
    from targetsel import TargetselError

    try:
        return fn()
    except TargetselError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def jsonable(value):
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def facts(model, query: str, plain) -> dict:
    """Everything targetsel answers about `query` on `model`; `plain`: the unsharded twin, for verify()."""
    from peft import LoraConfig

    from targetsel import check, patch, select, verify
    from targetsel.views.display import summary_rows

    sel = select(model, query)
    lock = sel.lock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = outcome(lambda: patch(LoraConfig(r=4, lora_alpha=8), sel))
    out = {
        "names": sel.names(),
        "rows": summary_rows(sel.resolution()),
        "text": repr(sel),
        "lora_params": sel.lora_params(8),
        "lock": {k: lock[k] for k in ("hash", "model_class", "count", "query")},
        "findings": [f.to_dict() for f in check(model, sel)],
    }
    if isinstance(config, str):
        out["patch_error"] = config
    else:
        out["target_modules"] = jsonable(config.target_modules)
        out["verify_here"] = verify(model, config)
        out["verify_plain"] = verify(plain, config)
        if model is not plain:  # the plain model's own config, applied to the sharded one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                own = patch(LoraConfig(r=4, lora_alpha=8), select(plain, query))
            out["plain_config_here"] = outcome(lambda: verify(model, own))
    return out


def peft_flow(kind: str, how: str, rank: int) -> dict:
    """Patch on the sharded model, get_peft_model on the rank-local plain model, shard it, audit, train a step."""
    import torch
    from peft import LoraConfig, get_peft_model

    from targetsel import TargetselCallback, audit, patch, select

    query = QUERIES[kind][0]
    sharded = wrap(build(kind), how)
    sel = select(sharded, query)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = patch(LoraConfig(r=4, lora_alpha=8), sel)
    lock = sel.lock()
    peft_model = wrap(get_peft_model(build(kind), config), how, peft=True)
    stream = io.StringIO()
    callback = TargetselCallback(lock, stream=stream)
    result = callback.check(peft_model)
    out = {"audit_ok": result.ok, "wrapped": list(result.wrapped), "callback_printed": stream.getvalue()}
    if how == "fsdp2":  # PEFT directly on the sharded model (DTensor base weights): the same adapters
        direct = get_peft_model(wrap(build(kind), how), config)
        out["direct_audit_ok"] = audit(direct, lock).ok
    # The README's flow: select and patch once on the meta model, adapt the rank-local model, shard, audit
    meta_sel = select(build(kind, "meta"), query)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta_config = patch(LoraConfig(r=4, lora_alpha=8), meta_sel)
    meta_lock = meta_sel.lock()
    out["meta_flow_audit_ok"] = audit(wrap(get_peft_model(build(kind), meta_config), how, peft=True), meta_lock).ok
    out["meta_lock_is_the_sharded_lock"] = meta_lock["hash"] == lock["hash"]
    if kind == "llama":  # one real step through the sharded adapters
        ids = torch.randint(3, 90, (2, 8), generator=torch.Generator().manual_seed(rank))
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        out["lora_grads"] = sum(1 for n, p in peft_model.named_parameters() if "lora_" in n and p.grad is not None)
    return out


def printing(rank: int) -> dict:
    """What each rank shows: sel.show(), patch()'s warnings, and a warnings filter set to "error"."""
    from peft import LoraConfig

    from targetsel import TargetselWarning, patch, select

    model = wrap(build("demo"), "fsdp2")
    sel = select(model, QUERIES["demo"][1])  # frozen vision layers: patch() warns
    shown = io.StringIO()
    sel.show(file=shown)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch(LoraConfig(r=4), sel)
    raised = "no error"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TargetselWarning)
        try:
            patch(LoraConfig(r=4), sel)
        except TargetselWarning as exc:  # every rank raises alike: none is left waiting in a collective
            raised = f"TargetselWarning: {str(exc)[:40]}"
    return {"show": shown.getvalue(), "warnings": sorted({str(w.message) for w in caught}), "error_filter": raised}


def run_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    warnings.filterwarnings("ignore")  # FSDP's and PEFT's own notices; targetsel's are recorded where tested
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
        results: dict = {"rank": rank, "world": dist.get_world_size(), "facts": {}, "peft": {}}
        for kind, queries in QUERIES.items():
            plain = build(kind)
            for how in WRAPPINGS:
                model = plain if how == "plain" else wrap(build(kind), how)
                for query in queries:
                    results["facts"][f"{kind}|{how}|{query}"] = facts(model, query, plain)
        for kind in QUERIES:
            for how in WRAPPINGS[1:]:
                results["peft"][f"{kind}|{how}"] = peft_flow(kind, how, rank)
        results["printing"] = printing(rank)
        dist.barrier()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    except BaseException:
        with open(os.path.join(out_dir, f"rank{rank}.error"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out_dir: str) -> None:
    import torch.multiprocessing as mp

    mp.spawn(run_rank, args=(WORLD, free_port(), out_dir), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main(sys.argv[1])
