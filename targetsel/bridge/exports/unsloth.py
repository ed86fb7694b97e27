"""unsloth: the keyword arguments of `FastModel.get_peft_model` / `FastLanguageModel.get_peft_model`.

Replays unsloth 2026.8.19 (github.com/unslothai/unsloth, commit 015bdef0d94a):

- `unsloth/models/llama.py` (`FastLlamaModel.get_peft_model`, FastLanguageModel's classic path):
  `for module in target_modules` — a list only (a string would be looped over character by
  character); an entry `embed_tokens` leaves the targets and goes to `modules_to_save`, which may
  hold only `lm_head` / `embed_tokens`; with `target_parameters=None` on an MoE config
  (`num_experts` / `n_routed_experts` / `num_local_experts` > 0) `get_moe_target_parameters` adds
  the fused `mlp.experts.gate_up_proj` / `down_proj` when a bare `gate_proj` / `up_proj` /
  `down_proj` / `gate_up_proj` entry is listed, and `get_moe_target_modules` adds per-expert
  `<leaf>.<i>` suffixes for ModuleLists of Linears under `*experts`; other keywords go to
  `LoraConfig(**kwargs)` (rank_pattern / alpha_pattern pass through; finetune_* are not taken there).
- `unsloth/models/vision.py` (`FastBaseModel.get_peft_model`: FastModel, FastVisionModel, and
  FastLanguageModel on models unsloth loads through FastModel): an explicit list is routed through
  unsloth_zoo's `get_peft_regex` when any of `finetune_vision_layers` / `finetune_language_layers` /
  `finetune_attention_modules` / `finetune_mlp_modules` is False (FastLanguageModel defaults
  `finetune_vision_layers` to False on that path) or `finetune_audio_layers` is True — the export
  sets them so the list passes unchanged —, then the same MoE additions.
- `unsloth/models/_utils.py`: `is_moe_model`, `get_moe_target_parameters`, `get_moe_target_modules`.

The export sets `target_parameters` explicitly (`[]` when none), which switches the automatic
expert parameters off. On FastLanguageModel's classic Llama path drop the four `finetune_*` keys,
which that path does not take; both paths are replayed and checked.
"""

from __future__ import annotations

from torch import nn

from targetsel.bridge.exports._common import Request, suffix_list, superset_hint
from targetsel.errors import ExportError

NAME = "unsloth"
SOURCE = "unsloth 2026.8.19 (commit 015bdef0d94a): unsloth/models/llama.py, unsloth/models/vision.py, unsloth/models/_utils.py"

FLAGS = {"finetune_vision_layers": True, "finetune_language_layers": True, "finetune_attention_modules": True,
         "finetune_mlp_modules": True}
MOE_BROAD = frozenset(("gate_proj", "up_proj", "down_proj", "gate_up_proj"))
_LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "bias", "layers_to_transform", "layers_pattern", "use_rslora",
              "init_lora_weights", "rank_pattern", "alpha_pattern", "ensure_weight_tying")


def _is_moe(model) -> bool:
    """`is_moe_model`: a positive expert count in the config (or its text_config)."""
    config = getattr(model, "config", model)
    for source in (config, getattr(config, "text_config", None)):
        for attr in ("num_experts", "n_routed_experts", "num_local_experts"):
            value = getattr(source, attr, None) if source is not None else None
            if value is not None:
                return value > 0
    return False


def _broad(targets) -> set[str]:
    return {t for t in targets if isinstance(t, str) and "." not in t and t in MOE_BROAD}


def _moe_parameters(model, targets) -> list[str]:
    """`get_moe_target_parameters` for a list of targets (None when not an MoE model)."""
    wanted = _broad(targets)
    if not _is_moe(model):
        return []
    names = [n for n, _ in model.named_parameters()]

    def resolve(default, alternate):  # _resolve_moe_parameter_name
        for n in names:
            if n == default or n.endswith("." + default):
                return default
            if n == alternate or n.endswith("." + alternate):
                return alternate
        return default

    out = []
    fused = (({"gate_proj", "up_proj", "gate_up_proj"}, ("mlp.experts.gate_up_proj", "experts.gate_up_proj")),
             ({"down_proj"}, ("mlp.experts.down_proj", "experts.down_proj")))
    for leaves, (default, alternate) in fused:
        name = resolve(default, alternate)
        if wanted & leaves and any(n == name or n.endswith("." + name) for n in names):
            out.append(name)
    return out


def _moe_modules(model, targets) -> list[str]:
    """`get_moe_target_modules`: `<leaf>.<i>` for ModuleLists of Linears directly under `*experts`."""
    wanted = _broad(targets)
    if not _is_moe(model) or not wanted:
        return []
    gate_up, down = bool(wanted & {"gate_proj", "up_proj", "gate_up_proj"}), "down_proj" in wanted
    out = set()
    for name, module in model.named_modules():
        parent, _, leaf = name.rpartition(".")
        if not isinstance(module, nn.ModuleList) or len(module) == 0 or not parent.endswith("experts"):
            continue
        if not all(isinstance(c, nn.Linear) or isinstance(getattr(c, "base_layer", None), nn.Linear) for c in module):
            continue
        is_down = "down" in leaf.lower()
        is_gate_up = not is_down and ("gate" in leaf.lower() or "up" in leaf.lower())
        if (is_down and not down) or (is_gate_up and not gate_up):
            continue
        out.update(f"{leaf}.{i}" for i in range(len(module)))
    return sorted(out)


def _lora_kwargs(keys: dict, model, targets, modules_to_save) -> dict:
    parameters = keys.get("target_parameters")
    if parameters is None:
        parameters = _moe_parameters(model, targets) or None
    targets = targets + [t for t in _moe_modules(model, targets) if t not in targets]
    is_classification = "Classification" in type(model).__name__
    kwargs = {"r": 16, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none"}  # get_peft_model's defaults
    kwargs.update({k: keys[k] for k in _LORA_KEYS if k in keys})
    kwargs.update(target_modules=targets, target_parameters=parameters, modules_to_save=modules_to_save,
                  task_type="SEQ_CLS" if is_classification else "CAUSAL_LM")
    return kwargs


def expand(keys: dict, model) -> dict:
    """FastBaseModel.get_peft_model (FastModel / FastVisionModel) for these keyword arguments."""
    targets = keys.get("target_modules")
    if targets is None or targets == "all-linear" or isinstance(targets, str):
        raise ExportError("target_modules None / 'all-linear' / a regex go through unsloth_zoo's get_peft_regex, "
                          "which the replay does not cover; pass a list")
    scoping = not all(keys.get(flag, True) for flag in FLAGS) or keys.get("finetune_audio_layers", False)
    if scoping:
        raise ExportError("with a finetune_* flag False (or finetune_audio_layers True) unsloth routes the list "
                          "through unsloth_zoo's get_peft_regex, which the replay does not cover")
    return _lora_kwargs(keys, model, list(targets), keys.get("modules_to_save"))


def expand_classic(keys: dict, model) -> dict:
    """FastLlamaModel.get_peft_model (FastLanguageModel's classic path) for these keyword arguments, finetune_* dropped."""
    targets, saved = [], list(keys.get("modules_to_save") or []) or None
    for module in keys.get("target_modules", ()):  # a string is looped over character by character
        if module == "embed_tokens":
            saved = (saved or []) + ["embed_tokens"]
        else:
            targets.append(module)
    for module in saved or ():
        if module not in ("lm_head", "embed_tokens"):
            raise ExportError(f"unsloth allows only 'lm_head' and 'embed_tokens' in modules_to_save, not {module!r}")
    return _lora_kwargs(keys, model, targets, sorted(set(saved)) if saved else None)


EXPANSIONS = (expand, expand_classic)


def candidates(request: Request):
    lists = [suffix_list(request, avoid=("embed_tokens",)), suffix_list(request, avoid=("embed_tokens", *MOE_BROAD)),
             list(request.names)]
    seen = []
    for value in lists:
        if value is None or value in seen:
            continue
        seen.append(value)
        yield {"target_modules": value, "target_parameters": request.target_parameters, **FLAGS,
               **request.patterns()}


def why_not(request: Request, failed: list) -> str:
    head = ("unsloth takes target_modules as a list only (FastLanguageModel loops over it), matched by PEFT's "
            "dotted-suffix rule")
    return f"{head}; the closest list: {failed[-1][1]}" if failed else (
        f"{head}, and an unselected module's name ends with a selected module's full name")


def alternative(request: Request, failed: list) -> str:
    return superset_hint(request) + "the `axolotl`, `swift` or `peft` export, which take a regex"
