"""ms-swift: `target_modules` / `target_regex` / `target_parameters` of `swift sft` arguments.

Replays ms-swift 4.6.0.dev0 (github.com/modelscope/ms-swift, commit 3602360a5623, main after v4.4.3):

- `swift/arguments/tuner_args.py` (`TunerArguments`): `target_modules: List[str]` (default
  `['all-linear']`), `target_regex: Optional[str]` — when set, `__post_init__` replaces
  `target_modules` by it (PEFT's fullmatch regex) —, `target_parameters`, `modules_to_save`
  (default []); `freeze_llm` / `freeze_vit` / `freeze_aligner` only shape the `all-linear`
  expansion (and full fine-tuning), so with explicit targets they change nothing and are not written.
- `swift/pipelines/train/tuner.py`: `get_target_modules` passes a string through; in a list,
  `all-linear` and `all-embedding` expand to model-specific names and, on Mamba model types
  (falcon_h1, mamba, mamba2, falcon_mamba, nemotron_h), the entries `out_proj` and `conv1d` are
  dropped (`_drop_mamba_incompatible_targets`); `get_modules_to_save` adds `v_head` for seq_cls;
  `prepare_adapter` builds `LoraConfig(task_type=…, target_modules=…, modules_to_save=…,
  target_parameters=…, lora_dropout=0.05 by default)` — PEFT refuses that dropout beside
  `target_parameters`, so those exports write 0.0 — (no rank or alpha pattern).
- `swift/tuners/peft.py` (`_create_and_replace_hook`): a target whose class is
  `NonDynamicallyQuantizableLinear` (`nn.MultiheadAttention.out_proj`) is skipped silently.
"""

from __future__ import annotations

from targetsel.bridge.exports._common import Request, refuse
from targetsel.errors import ExportError
from targetsel.text.grouping import summarize_names

NAME = "swift"
SOURCE = ("ms-swift 4.6.0.dev0 (commit 3602360a5623): swift/pipelines/train/tuner.py, swift/arguments/tuner_args.py, "
          "swift/tuners/peft.py")

KEYWORDS = ("all-linear", "all-embedding")
MAMBA_MODEL_TYPES = frozenset(("falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"))
MAMBA_DROPPED = frozenset(("out_proj", "conv1d"))
SKIPPED_CLASSES = frozenset(("NonDynamicallyQuantizableLinear",))


def expand(keys: dict, model) -> dict:
    """What `prepare_adapter` hands `LoraConfig` for these arguments (tuner_type lora, peft backend)."""
    targets = keys.get("target_regex") or list(keys.get("target_modules", ["all-linear"]))
    if isinstance(targets, list):
        if any(t in KEYWORDS for t in targets):
            raise ExportError(f"the replay does not expand {', '.join(KEYWORDS)} (model-specific names)")
        if getattr(getattr(model, "config", None), "model_type", None) in MAMBA_MODEL_TYPES:
            targets = [t for t in targets if t not in MAMBA_DROPPED]
    kwargs = {"r": keys.get("lora_rank", 8), "target_modules": targets, "lora_alpha": keys.get("lora_alpha", 32),
              "lora_dropout": keys.get("lora_dropout", 0.05), "bias": keys.get("lora_bias", "none"),
              "modules_to_save": list(keys.get("modules_to_save") or []),
              "task_type": str(keys.get("task_type", "causal_lm")).upper()}
    if keys.get("target_parameters") is not None:
        kwargs["target_parameters"] = list(keys["target_parameters"])
    return kwargs


EXPANSIONS = (expand,)


def candidates(request: Request):
    if request.ranks or request.alphas:
        raise refuse(request, "ms-swift's LoRA arguments have no per-module rank or alpha key (lora_rank and "
                     "lora_alpha only)", "one rank for the whole selection, or the `axolotl`, `unsloth` or `peft` export")
    skipped = [n for n in request.names if request.classes.get(n) in SKIPPED_CLASSES]
    if skipped:
        raise refuse(request, f"ms-swift skips every NonDynamicallyQuantizableLinear target without a word "
                     f"(swift/tuners/peft.py), and {len(skipped)} are selected ({summarize_names(skipped, limit=3)})",
                     "the selection without them, or the `peft` export (PEFT itself wraps them)")
    for value in request.forms():
        keys: dict = {"target_regex": value} if isinstance(value, str) else {"target_modules": list(value)}
        if isinstance(value, list) and any(v in KEYWORDS for v in value):
            continue
        if request.parameter_names:
            keys["target_parameters"] = request.target_parameters
            keys["lora_dropout"] = 0.0  # the default 0.05 makes PEFT's ParamWrapper raise
        yield keys


def why_not(request: Request, failed: list) -> str:
    return failed[0][1] if failed else "no argument set could be built"


def alternative(request: Request, failed: list) -> str:
    return "the `peft` export (the same targets as adapter_config.json fields)"
