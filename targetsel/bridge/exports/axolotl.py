"""axolotl: the `lora_*` keys of an axolotl YAML config.

Replays axolotl 0.18.0 (github.com/axolotl-ai-cloud/axolotl, commit 067b021c8b87):

- `src/axolotl/utils/schemas/peft.py` (`LoraConfig` schema): `lora_target_modules: str | list[str]`,
  `lora_target_parameters: str | list[str]`, `lora_target_linear: bool`, `lora_rank_pattern` /
  `lora_alpha_pattern: dict[str, PositiveInt]`, `peft_layers_to_transform`, `peft_layers_pattern`,
  `lora_modules_to_save`; a validator refuses `lora_dropout != 0` beside `lora_target_parameters`.
  The config is validated with pydantic and dumped (`utils/config/__init__.py`, `model_dump(
  exclude_none=True)`): keys the schema does not declare are dropped — `lora_exclude_modules`,
  which `loaders/adapter.py` reads with getattr, never arrives unless a plugin declares it.
- `src/axolotl/loaders/adapter.py` (`_build_peft_lora_config`): `target_modules=lora_target_modules
  or []` as written (a string is PEFT's regex, a list its suffix rule); `lora_target_linear: true`
  adds every linear leaf name (`find_all_linear_names`), so it must be false; `task_type` from the
  model's class name (SequenceClassification → SEQ_CLS, TokenClassification → TOKEN_CLS).
"""

from __future__ import annotations

from targetsel.bridge.exports._common import Request, refuse
from targetsel.errors import ExportError

NAME = "axolotl"
SOURCE = "axolotl 0.18.0 (commit 067b021c8b87): src/axolotl/loaders/adapter.py, src/axolotl/utils/schemas/peft.py"

# The schema fields the replay reads (all declared by axolotl's LoraConfig schema).
DECLARED = frozenset((
    "lora_target_modules", "lora_target_parameters", "lora_target_linear", "lora_modules_to_save",
    "lora_rank_pattern", "lora_alpha_pattern", "lora_dropout", "peft_layers_to_transform",
    "peft_layers_pattern", "lora_r", "lora_alpha",
))


def candidates(request: Request):
    bad = {k: v for k, v in request.alpha_pattern.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise refuse(request, f"axolotl's lora_alpha_pattern is dict[str, PositiveInt] and cannot hold "
                     f"{sorted(set(bad.values()))}", "integer alphas, or --to peft / unsloth, which take any number")
    for value in request.forms():
        keys: dict = {"lora_target_modules": value, "lora_target_linear": False}
        if request.parameter_names:
            keys["lora_target_parameters"] = request.target_parameters
            keys["lora_dropout"] = 0.0  # the schema refuses any other dropout beside lora_target_parameters
        keys.update(request.patterns("lora_"))
        yield keys


def expand(keys: dict, model) -> dict:
    """What `_build_peft_lora_config` hands `LoraConfig` for these YAML keys."""
    cfg = {k: v for k, v in keys.items() if k in DECLARED and v is not None}  # model_dump(exclude_none) of the schema
    if cfg.get("lora_target_linear"):
        raise ExportError("lora_target_linear: true adds every linear leaf name (find_all_linear_names); "
                          "the replay covers lora_target_linear: false only")
    if cfg.get("lora_target_parameters") and cfg.get("lora_dropout"):
        raise ExportError("axolotl refuses lora_dropout != 0 beside lora_target_parameters "
                          "(validate_lora_target_parameters_dropout)")
    kwargs = {
        "target_modules": cfg.get("lora_target_modules") or [],
        "target_parameters": cfg.get("lora_target_parameters") or [],
        "layers_to_transform": cfg.get("peft_layers_to_transform"),
        "layers_pattern": cfg.get("peft_layers_pattern"),
        "modules_to_save": cfg.get("lora_modules_to_save") or None,
        "exclude_modules": None,  # getattr(cfg, "lora_exclude_modules"): undeclared, dropped by the schema
        "lora_dropout": cfg.get("lora_dropout", 0.0),
        "bias": "none",
        "task_type": _task_type(model),
    }
    for key, field in (("lora_r", "r"), ("lora_alpha", "lora_alpha")):
        if cfg.get(key) is not None:
            kwargs[field] = cfg[key]
    for key, field in (("lora_rank_pattern", "rank_pattern"), ("lora_alpha_pattern", "alpha_pattern")):
        if cfg.get(key):
            kwargs[field] = dict(cfg[key])
    return kwargs


def _task_type(model) -> str:
    name = type(model).__name__  # adapter.py _get_peft_task_type
    if "SequenceClassification" in name:
        return "SEQ_CLS"
    if "TokenClassification" in name:
        return "TOKEN_CLS"
    return "CAUSAL_LM"


EXPANSIONS = (expand,)


def why_not(request: Request, failed: list) -> str:
    return failed[0][1] if failed else "no key set could be built"


def alternative(request: Request, failed: list) -> str:
    return "the `peft` export (the same targets as adapter_config.json fields)"
