"""TRL: the `ModelConfig` LoRA fields of a TRL script (`trl sft --config cfg.yaml`, `--lora_target_modules …`).

Replays TRL 1.16.0 (github.com/huggingface/trl, v1.16.0; the installed copy is ground truth and
tests/bridge/test_exports.py runs the real functions against this replay):

- `trl/trainer/model_config.py` (`ModelConfig.__post_init__`): a `lora_target_modules` with one
  item is replaced by that item — a string, which PEFT reads as a fullmatch regex: `["q_proj"]`
  then targets only a module named exactly `q_proj`, while `["q_proj", "v_proj"]` stays PEFT's
  suffix list.
- `trl/trainer/utils.py` (`get_peft_config`): `LoraConfig(task_type=lora_task_type, r=lora_r,
  target_modules=lora_target_modules, lora_alpha, lora_dropout, bias="none", use_rslora, use_dora,
  modules_to_save=lora_modules_to_save, target_parameters=lora_target_parameters when not None)`;
  `lora_target_modules=None` leaves PEFT's per-architecture defaults, so a parameters-only export
  writes `[]`; the default `lora_dropout=0.05` makes PEFT refuse `target_parameters`, so those
  exports write 0.0. No rank or alpha pattern field.

`SFTTrainer(peft_config=...)` takes a `LoraConfig` instead: use `patch()` (or the `peft` export);
what SFTTrainer adds to it on its own (`modules_to_save=["lm_head"]` and `trainable_token_indices`
when a cloned chat template adds tokens) is what `TargetselCallback` reports at train start.
"""

from __future__ import annotations

from targetsel.bridge.exports._common import Request, refuse, suffix_list

NAME = "trl"
SOURCE = "TRL 1.16.0: trl/trainer/model_config.py (ModelConfig.__post_init__), trl/trainer/utils.py (get_peft_config)"


def expand(keys: dict, model) -> dict:
    """`get_peft_config(ModelConfig(**keys))`: what TRL hands `LoraConfig`."""
    targets = keys.get("lora_target_modules")
    if hasattr(targets, "__len__") and len(targets) == 1:  # ModelConfig.__post_init__
        targets = targets[0]
    kwargs = {"task_type": keys.get("lora_task_type", "CAUSAL_LM"), "r": keys.get("lora_r", 16), "target_modules": targets,
              "lora_alpha": keys.get("lora_alpha", 32), "lora_dropout": keys.get("lora_dropout", 0.05), "bias": "none",
              "use_rslora": keys.get("use_rslora", False), "use_dora": keys.get("use_dora", False),
              "modules_to_save": keys.get("lora_modules_to_save")}
    if keys.get("lora_target_parameters") is not None:
        kwargs["target_parameters"] = keys["lora_target_parameters"]
    return kwargs


EXPANSIONS = (expand,)


def candidates(request: Request):
    if request.ranks or request.alphas:
        raise refuse(request, "TRL's ModelConfig has no per-module rank or alpha field (lora_r and lora_alpha only)",
                     "SFTTrainer(peft_config=targetsel.patch(LoraConfig(...), selection, ranks=...)) — the `peft` export")
    lists = [suffix_list(request), list(request.names)] if request.names else [[]]
    for value in [v for v in lists if v is not None and len(v) != 1] + [[f] for f in _regexes(request)] + [
            v for v in lists if v is not None and len(v) == 1]:
        keys: dict = {"use_peft": True, "lora_target_modules": value}
        if request.parameter_names:
            keys["lora_target_parameters"] = request.target_parameters
            keys["lora_dropout"] = 0.0  # the default 0.05 makes PEFT's ParamWrapper raise
        yield keys


def _regexes(request: Request) -> list[str]:
    """One-item lists become a regex anyway: offer the exact regex as that one item."""
    return [f for f in request.forms() if isinstance(f, str)] if request.names else []


def why_not(request: Request, failed: list) -> str:
    return failed[0][1] if failed else "no field set could be built"


def alternative(request: Request, failed: list) -> str:
    return "SFTTrainer(peft_config=targetsel.patch(LoraConfig(...), selection)) — the `peft` export"
