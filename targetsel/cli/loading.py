"""Build the model a command-line user names, without ever loading weights.

`MODEL` on the command line is one of:

- `demo` — the embedded small VLM (`targetsel.demo`), so the incidents can be seen offline;
- a local directory holding `config.json`, or a `config.json` path — built with transformers on
  the meta device as the class its `architectures` field names (the class people train, so the
  module names match their `get_peft_model`), else the causal-LM auto class, else the base one;
- `package.module:factory` — a callable returning an `nn.Module` (or a module instance);
- a Hugging Face hub id — only its config is fetched; offline, that fails with a clear message.

Transformers is imported only when a config has to be read: `demo` and factories stay fast.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from targetsel.errors import ModelLoadError

_AUTO_FALLBACKS = ("AutoModelForCausalLM", "AutoModel")


def load_model(spec: str, model_class: Optional[str] = None) -> nn.Module:
    """The `nn.Module` a command-line MODEL argument names, built on the meta device where possible."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("MODEL is empty; pass `demo`, a directory or config.json, a hub id, or package.module:factory")
    spec = spec.strip()
    if spec == "demo":
        from targetsel.demo import build_demo_model

        return build_demo_model()
    path = Path(spec).expanduser()
    if path.exists():
        return _from_config_path(path, model_class)
    if ":" in spec and not spec.startswith(("/", ".")):
        return _from_factory(spec)
    if spec.endswith(".json") or os.sep in spec and not _looks_like_hub_id(spec):
        raise ModelLoadError(f"no such file or directory: {spec!r}")
    if _looks_like_hub_id(spec):
        return _from_hub(spec, model_class)
    raise ModelLoadError(
        f"cannot tell what MODEL {spec!r} is: pass `demo`, a directory holding config.json, a config.json path, "
        "a Hugging Face hub id such as Qwen/Qwen2.5-0.5B, or package.module:factory"
    )


def read_json(path: Path, error: type) -> object:
    """The JSON in `path`, or `error` saying why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {str(path)!r} as JSON: {exc}") from None


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts)


def _from_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {module_name!r} for MODEL {spec!r}: {exc}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"{module_name!r} has no attribute {attr!r} (MODEL {spec!r})")
        target = getattr(target, part)
    model = target() if callable(target) and not isinstance(target, nn.Module) else target
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _from_config_path(path: Path, model_class: Optional[str]) -> nn.Module:
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ModelLoadError(f"{str(path)!r} holds no config.json; pass a model directory or its config.json")
    data = read_json(config_file, ModelLoadError)
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelLoadError(f"{str(config_file)!r} is not a transformers config: it has no 'model_type'")
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(config_file), local_files_only=True)
    except Exception as exc:  # transformers raises ValueError/KeyError for unknown model types
        raise ModelLoadError(f"transformers cannot build a config from {str(config_file)!r}: {exc}") from None
    return build_from_config(config, model_class, source=str(config_file))


def _from_hub(repo_id: str, model_class: Optional[str]) -> nn.Module:
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(repo_id)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in str(exc).lower() or "connect" in str(exc).lower()
        why = "the Hugging Face hub is not reachable from here (offline)" if offline else str(exc).splitlines()[0]
        raise ModelLoadError(
            f"cannot fetch the config of {repo_id!r} from the Hugging Face hub: {why}. Only config.json is needed — "
            "no weights: download it elsewhere and pass its path, or pass a local model directory."
        ) from None
    return build_from_config(config, model_class, source=repo_id)


def _transformers():
    try:
        import transformers
    except ImportError:  # pragma: no cover - transformers is a dependency
        raise ModelLoadError("reading a model config needs transformers: pip install transformers") from None
    return transformers


def build_from_config(config, model_class: Optional[str] = None, source: str = "config") -> nn.Module:
    """The model class the config names (or `model_class`), built on the meta device: no weights."""
    transformers = _transformers()
    candidates = [model_class] if model_class else [*(getattr(config, "architectures", None) or []), *_AUTO_FALLBACKS]
    errors = []
    for name in candidates:
        cls = _resolve_class(transformers, name)
        if cls is None:
            errors.append(f"{name}: not found in transformers")
            continue
        try:
            with torch.device("meta"):
                if hasattr(cls, "from_config"):  # the Auto classes
                    return cls.from_config(config)
                return cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    hint = "" if model_class else "; pass --model-class NAME (a transformers class or package.module:Class)"
    raise ModelLoadError(f"cannot build a model from {source}: " + "; ".join(errors) + hint)


def _resolve_class(transformers, name: str):
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr, None)
        except ImportError:
            return None
    try:
        return getattr(transformers, name, None)
    except Exception:  # transformers' lazy module raises on classes whose backend is missing
        return None
