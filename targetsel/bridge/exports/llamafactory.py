"""LLaMA-Factory: `lora_target` and the `freeze_*` flags of a LLaMA-Factory YAML.

Replays LLaMA-Factory 0.9.5+ (github.com/hiyouga/LLaMA-Factory, commit ff6d4d12eeb0, after v0.9.5):

- `src/llamafactory/hparams/finetuning_args.py`: `lora_target` is one comma-separated string
  (`split_arg`: split on ",", items stripped; no regex), default "all"; `additional_target` is
  `modules_to_save`; `freeze_vision_tower` (default True), `freeze_multi_modal_projector` (True),
  `freeze_language_model` (False).
- `src/llamafactory/model/adapter.py` (`_setup_lora_tuning`): `["all"]` → `find_all_linear_modules`
  (`model_utils/misc.py`: leaf names of classes with "Linear" and not "Embedding" in their name, not
  under `lm_head` / the projector / a frozen vision tower); then `patch_target_modules`.
- `src/llamafactory/model/model_utils/visual.py`: for a composite (VLM) `model_type` registered
  there, `patch_target_modules` replaces the targets by every module name that *contains* one of
  them as a substring and contains none of the forbidden keys (`get_forbidden_modules`: the vision
  tower, projector, language model keys as the freeze flags say, plus `lora_conflict_keys`). PEFT
  then gets that list of full names, matched by its own suffix rule. Other models: the list as is.
"""

from __future__ import annotations

from targetsel.bridge.exports._common import Request, dotted_suffixes, refuse, suffix_list, superset_hint
from targetsel.errors import ExportError
from targetsel.text.grouping import summarize_names

NAME = "llamafactory"
SOURCE = ("LLaMA-Factory 0.9.5 (commit ff6d4d12eeb0): src/llamafactory/model/adapter.py, "
          "model/model_utils/visual.py, model/model_utils/misc.py, hparams/finetuning_args.py")

# model_type → (projector_keys, vision_model_keys, language_model_keys, lora_conflict_keys), as
# `_register_composite_model` registers them in model_utils/visual.py at that commit.
_LLAVA = (("multi_modal_projector",), ("vision_tower",), ("language_model", "lm_head"), ())
_QWEN_VL = (("visual.merger",), ("visual.patch_embed", "visual.blocks"), ("language_model", "lm_head"), ("patch_embed",))
_QWEN3_VL = (("visual.merger",), ("visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list"),
             ("language_model", "lm_head"), ("patch_embed",))
_QWEN3_5 = (("model.visual.merger",), ("visual.pos_embed", "visual.patch_embed", "visual.blocks"),
            ("language_model", "lm_head"), ("patch_embed",))
COMPOSITE = {
    "dots_ocr": (("vision_tower.merger",), ("vision_tower",), ("model", "lm_head"), ("merger",)),
    "gemma3": _LLAVA,
    "gemma3n": (("multi_modal_projector",), ("vision_tower", "audio_tower"), ("language_model", "lm_head"),
                ("timm_model", "subsample_conv_projection")),
    "gemma4": (("model.embed_vision", "model.embed_audio"), ("vision_tower", "audio_tower"), ("language_model", "lm_head"),
               ("per_layer_projection_norm",)),
    "glm4v": _QWEN_VL, "glm4v_moe": _QWEN_VL, "glm_ocr": _QWEN_VL,
    "internvl": _LLAVA, "interns1": _LLAVA,
    "Keye": (("mlp_AR",), ("visual.vision_model.patch_embedding", "visual.vision_model.encoder"), ("model", "lm_head"),
             ("patch_embedding",)),
    "kimi_vl": _LLAVA,
    "llama4": (("multi_modal_projector",), ("vision_model",), ("language_model", "lm_head"), ()),
    "llava": _LLAVA, "llava_next": _LLAVA, "llava_next_video": _LLAVA,
    "minicpmv": (("resampler",), ("vpm",), ("llm",), ()),
    "minicpmv4_6": (("model.merger",), ("model.vision_tower",), ("model.language_model", "lm_head"), ()),
    "minicpmo": (("resampler",), ("vpm", "apm", "audio_avg_pooler", "audio_projection_layer", "tts"), ("llm",),
                 ("audio_projection_layer",)),
    "mistral3": (("model.multi_modal_projector",), ("vision_tower",), ("language_model", "lm_head"), ()),
    "moss_vl": (("model.visual.merger", "model.separator_token"),
                ("model.visual.pos_embed", "model.visual.patch_embed", "model.visual.blocks"),
                ("model.language_model", "lm_head"), ("patch_embed",)),
    "mllama": (("multi_modal_projector",), ("vision_model",), ("language_model", "lm_head"), ()),
    "paligemma": _LLAVA,
    "qwen2_audio": (("multi_modal_projector",), ("audio_tower",), ("language_model", "lm_head"), ()),
    "qwen2_5_omni_thinker": (("visual.merger", "audio_tower.proj"), ("visual.patch_embed", "visual.blocks", "audio_tower"),
                             ("model", "lm_head"), ("patch_embed",)),
    "qwen2_vl": _QWEN_VL, "qwen2_5_vl": _QWEN_VL,
    "qwen3_vl": _QWEN3_VL, "qwen3_vl_moe": _QWEN3_VL,
    "qwen3_omni_moe_thinker": (("visual.merger", "audio_tower.proj"), _QWEN3_VL[1] + ("audio_tower",),
                               ("language_model", "lm_head"), ("patch_embed",)),
    "qwen3_5": _QWEN3_5, "qwen3_5_moe": _QWEN3_5,
    "video_llava": _LLAVA,
}
_FLAGS = (("freeze_multi_modal_projector", True, 0), ("freeze_vision_tower", True, 1), ("freeze_language_model", False, 2))


def _model_type(model):
    return getattr(getattr(model, "config", None), "model_type", None)


def _split_arg(value):
    return [item.strip() for item in value.split(",")] if isinstance(value, str) else value


def _forbidden(model_type, keys: dict) -> set[str]:
    """`get_forbidden_modules` plus the `lora_conflict_keys` `patch_target_modules` adds."""
    spec = COMPOSITE[model_type]
    out = {k for flag, default, i in _FLAGS if keys.get(flag, default) for k in spec[i]}
    return out | set(spec[3])


def expand(keys: dict, model) -> dict:
    """What `_setup_lora_tuning` hands `LoraConfig` for these YAML keys (finetuning_type: lora)."""
    if keys.get("finetuning_type", "lora") != "lora" or keys.get("use_llama_pro"):
        raise ExportError("the replay covers finetuning_type: lora without use_llama_pro")
    targets = _split_arg(keys.get("lora_target", "all"))
    model_type = _model_type(model)
    names = [name for name, _ in model.named_modules()]
    if len(targets) == 1 and targets[0] == "all":
        targets = _all_linear(model, model_type, keys.get("freeze_vision_tower", True))
    if model_type in COMPOSITE:  # patch_target_modules
        forbidden = _forbidden(model_type, keys)
        targets = [n for n in names if any(t in n for t in targets) and not any(f in n for f in forbidden)]
    rank = keys.get("lora_rank", 8)
    return {"r": rank, "target_modules": targets, "lora_alpha": keys.get("lora_alpha") or rank * 2,
            "lora_dropout": keys.get("lora_dropout", 0.0), "task_type": "CAUSAL_LM",
            "modules_to_save": _split_arg(keys.get("additional_target"))}


def _all_linear(model, model_type, freeze_vision_tower) -> list[str]:
    """`find_all_linear_modules` (model_utils/misc.py)."""
    forbidden = {"lm_head"} | ({"output_layer"} if model_type == "chatglm" else set()) | (
        {"output"} if model_type == "internlm2" else set())
    if model_type in COMPOSITE:
        forbidden |= set(COMPOSITE[model_type][0]) | (set(COMPOSITE[model_type][1]) if freeze_vision_tower else set())
    found = {name.split(".")[-1] for name, module in model.named_modules()
             if not any(f in name for f in forbidden)
             and "Linear" in type(module).__name__ and "Embedding" not in type(module).__name__}
    return sorted(found)


EXPANSIONS = (expand,)


def candidates(request: Request):
    if request.parameter_names:
        raise refuse(request, "LLaMA-Factory has no key for PEFT's target_parameters (fused expert parameters)",
                     "the `axolotl`, `swift`, `unsloth`, `trl` or `peft` export, which pass target_parameters")
    if request.ranks or request.alphas:
        raise refuse(request, "LLaMA-Factory has no per-module rank or alpha key (it passes lora_rank and "
                     "lora_alpha only)", "one rank for the whole selection, or the `axolotl`, `unsloth` or `peft` export")
    model_type = _model_type(request.model)
    if model_type in COMPOSITE:
        yield _composite(request, model_type)
        return
    for value in (suffix_list(request, avoid=("all",)), list(request.names)):
        if value and all("," not in v and v == v.strip() for v in value):
            yield {"finetuning_type": "lora", "lora_target": ",".join(value)}


def _composite(request: Request, model_type) -> dict:
    """Substring keys that, through `patch_target_modules`, name exactly the selected modules."""
    spec = COMPOSITE[model_type]
    chosen = set(request.names)
    keys = {flag: default for flag, default, _ in _FLAGS}
    for flag, _, i in _FLAGS[:2]:  # unfreeze the projector / vision tower when the selection is inside them
        keys[flag] = not any(k in n for n in request.names for k in spec[i])
    forbidden = _forbidden(model_type, keys)
    blocked = [n for n in request.names if any(f in n for f in forbidden)]
    if blocked:
        hit = sorted({f for f in forbidden for n in blocked if f in n})
        raise refuse(request, f"LLaMA-Factory never puts LoRA on a {model_type} module whose name contains "
                     f"{', '.join(map(repr, hit))} (lora_conflict_keys), e.g. {blocked[0]!r}",
                     f"the selection without those {len(blocked)} module(s) ({summarize_names(blocked, limit=3)}), "
                     "or the `axolotl`, `swift` or `peft` export")
    allowed = [n for n in request.all_names if not any(f in n for f in forbidden)]
    safe: dict[str, bool] = {}
    picked: dict[str, None] = {}
    for name in request.names:
        for key in dotted_suffixes(name):
            if key not in safe:
                safe[key] = key != "all" and "," not in key and all(m in chosen for m in allowed if key in m)
            if safe[key]:
                picked.setdefault(key)
                break
        else:
            witness = next((m for m in allowed if name in m and m not in chosen), name)
            raise refuse(request, f"LLaMA-Factory expands lora_target by substring on composite models and "
                         f"{name!r} is part of the unselected {witness!r}",
                         f"select {witness!r} too, or the `axolotl`, `swift` or `peft` export (they take a regex)")
    return {"finetuning_type": "lora", "lora_target": ",".join(picked), **keys}


def why_not(request: Request, failed: list) -> str:
    if not failed:
        return ("lora_target is a comma-separated list of names (no regex), PEFT matches each by dotted suffix, and "
                "an unselected module's name ends with a selected module's full name")
    return f"lora_target is a comma-separated list of names (no regex); the closest list: {failed[-1][1]}"


def alternative(request: Request, failed: list) -> str:
    return superset_hint(request) + "the `axolotl`, `swift` or `peft` export, which take a regex"
