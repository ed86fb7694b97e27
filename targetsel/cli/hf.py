"""Models from transformers configs — a local config.json or a hub id — built on the meta device.

The class built is the one the config's `architectures` names: the class people train, so module
names match their `get_peft_model`. A name transformers does not have is never replaced by another
class (a `FooBarForCausalLM` built as `LlamaForCausalLM` would answer for different module names):
it is remote code (`--trust-remote-code` runs it, as transformers' `trust_remote_code=True` does) or
a mistake, and the error says which and names the classes transformers has for that model type.
Only a config without `architectures` falls back to the causal-LM auto class, then the base one,
with a note saying which class was built.

The hub is asked once, briefly: one HEAD request with a short timeout tells whether it answers;
when it does not (or HF_HUB_OFFLINE is set) the config comes from the local cache or the command
fails with one line, instead of huggingface_hub's five retries over half a minute.
"""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from targetsel.cli.files import read_json
from targetsel.cli.terminal import note
from targetsel.errors import ModelLoadError

_AUTO_FALLBACKS = ("AutoModelForCausalLM", "AutoModel")
HUB_PROBE_TIMEOUT = 1.5  # seconds for the one reachability request: a refused or unresolvable host fails at once


def from_config_path(path: Path, model_class: Optional[str], *, trust_remote_code: bool = False):
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ModelLoadError(f"{str(path)!r} holds no config.json; pass a model directory or its config.json")
    data = read_json(config_file, ModelLoadError)
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelLoadError(f"{str(config_file)!r} is not a transformers config: it has no 'model_type'")
    # remote code is found next to config.json: transformers needs the directory for that
    where = str(config_file.parent) if config_file.name == "config.json" else str(config_file)
    transformers = _transformers()
    try:
        with _quiet_hub():
            config = transformers.AutoConfig.from_pretrained(
                where, local_files_only=True, trust_remote_code=trust_remote_code
            )
    except Exception as exc:  # transformers raises ValueError/KeyError/OSError for unknown types and bad code
        raise ModelLoadError(_config_error(str(config_file), data, exc, trust_remote_code)) from None
    return build_from_config(config, model_class, source=str(config_file), trust_remote_code=trust_remote_code)


def from_hub(repo_id: str, model_class: Optional[str], *, trust_remote_code: bool = False, maybe_local: bool = False):
    from huggingface_hub import constants

    local = f"no such file or directory {repo_id!r}, and " if maybe_local else ""
    unreachable = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else hub_unreachable(repo_id)
    offline_error = ModelLoadError(
        f"{local}cannot fetch the config of {repo_id!r}: the Hugging Face hub is not reachable from here "
        f"(offline: {unreachable}) and the config is not in the local cache. Only config.json is needed — "
        "no weights: download it elsewhere and pass its path, or pass a local model directory."
    )
    if unreachable is not None and not _cached(repo_id):
        raise offline_error  # before importing transformers and torch: an offline hub id fails at once
    transformers = _transformers()
    try:
        with _quiet_hub():
            config = transformers.AutoConfig.from_pretrained(
                repo_id, local_files_only=unreachable is not None, trust_remote_code=trust_remote_code
            )
    except Exception as exc:  # OSError (not found, offline), ValueError (remote code), HTTP errors
        if unreachable is not None:
            raise offline_error from None
        raise ModelLoadError(f"{local}{_config_error(repo_id, {}, exc, trust_remote_code)}") from None
    return build_from_config(config, model_class, source=repo_id, trust_remote_code=trust_remote_code)


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unreadable cache is no cache
        return False


def hub_unreachable(repo_id: str) -> Optional[str]:
    """None when the hub answers one HEAD request for the config within HUB_PROBE_TIMEOUT, else why not."""
    from huggingface_hub import get_session, hf_hub_url

    try:
        get_session().head(hf_hub_url(repo_id, "config.json"), timeout=HUB_PROBE_TIMEOUT, follow_redirects=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means: do not go online
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return None


@contextmanager
def _quiet_hub():
    """huggingface_hub logs each retry as a warning; the one error line targetsel prints says it all."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _config_error(source: str, data: dict, exc: Exception, trust_remote_code: bool) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if not trust_remote_code and (auto_map or "trust_remote_code" in str(exc)):
        return (
            f"{source!r} needs its own Python code (remote code{_auto_map_text(auto_map)}), which transformers "
            "runs only when asked: pass --trust-remote-code if you trust that code."
        )
    return f"transformers cannot build a config from {source!r}: {first}"


def _auto_map_text(auto_map) -> str:
    if not isinstance(auto_map, dict) or not auto_map:
        return ""
    return ": auto_map " + ", ".join(f"{k} → {v}" for k, v in sorted(auto_map.items()))


def _transformers():
    try:
        import transformers
    except ImportError:  # pragma: no cover - transformers is a dependency
        raise ModelLoadError("reading a model config needs transformers: pip install transformers") from None
    return transformers


# ---------------------------------------------------------------------------- the class


def build_from_config(config, model_class: Optional[str] = None, source: str = "config", *,
                      trust_remote_code: bool = False):
    """The model class the config names (or `model_class`), built on the meta device: no weights."""
    if model_class:
        return _build(model_class, config, source, trust_remote_code, hint="")
    architectures = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
    if not architectures:
        model = None
        errors = []
        for name in _AUTO_FALLBACKS:
            try:
                model = _build(name, config, source, trust_remote_code, hint="")
                break
            except ModelLoadError as exc:
                errors.append(str(exc))
        if model is None:
            raise ModelLoadError("; ".join(errors) + "; pass --model-class NAME (a transformers class or package.module:Class)")
        note(f"{source} names no `architectures`: built {type(model).__name__} ({name}); "
             "pass --model-class to build another class")
        return model
    errors = []
    for name in architectures:
        try:
            return _build(name, config, source, trust_remote_code, hint=None)
        except ModelLoadError as exc:
            errors.append(str(exc))
    raise ModelLoadError("; ".join(errors))


def _build(name: str, config, source: str, trust_remote_code: bool, hint: Optional[str]):
    """`name` built from `config` on meta. `hint` None: `name` came from `architectures` (the error explains)."""
    import torch

    cls, auto_key = _resolve_class(name, config, trust_remote_code)
    if cls is None:
        if hint is None:
            raise ModelLoadError(_unknown_architecture(name, config, source))
        raise ModelLoadError(f"cannot build a model from {source}: {name}: not found in transformers")
    try:
        with torch.device("meta"):
            if auto_key is not None:  # remote code, through the auto class its auto_map names
                return cls.from_config(config, trust_remote_code=True)
            if hasattr(cls, "from_config"):  # the Auto classes
                return cls.from_config(config, trust_remote_code=trust_remote_code)
            return cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    except Exception as exc:  # noqa: BLE001 - the model's own __init__: any error, reported in one line
        text = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
        raise ModelLoadError(f"cannot build {name} from {source}: {why}; pass --model-class NAME to build another class") from None


def _resolve_class(name: str, config, trust_remote_code: bool):
    """(class, None), or (auto class, its auto_map key) for remote code, or (None, None)."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr, None), None
        except ImportError:
            return None, None
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code:
        for key, ref in auto_map.items():
            refs = ref if isinstance(ref, (list, tuple)) else [ref]
            if key.startswith("AutoModel") and any(isinstance(r, str) and r.split(".")[-1] == name for r in refs):
                return getattr(_transformers(), key), key
    try:
        return getattr(_transformers(), name, None), None
    except Exception:  # transformers' lazy module raises on classes whose backend is missing
        return None, None


def _unknown_architecture(name: str, config, source: str) -> str:
    import transformers

    model_type = getattr(config, "model_type", None)
    auto_map = getattr(config, "auto_map", None) or {}
    remote = [key for key, ref in auto_map.items() if key.startswith("AutoModel") and str(ref).split(".")[-1] == name]
    text = (f"{source} names architectures {name!r}, which transformers {transformers.__version__} does not have; "
            "targetsel does not build another class in its place (its module names could differ from the model you train)")
    if remote:  # (with --trust-remote-code, _resolve_class has returned its auto class instead)
        return text + f". Its code comes with the model (auto_map {remote[0]} → {auto_map[remote[0]]}): pass --trust-remote-code to build it"
    # no auto_map entry: --trust-remote-code would not help, transformers has nothing to run
    text += f". The config has no auto_map entry for {name!r}, so it is not remote code transformers can load"
    known = known_classes(model_type)
    if known:
        return text + (f". For model_type {model_type!r} transformers has " + ", ".join(known[:8])
                       + f": pass --model-class {known[0]} to build one of them")
    return text + ". Pass --model-class NAME (a transformers class or package.module:Class)"


def known_classes(model_type: Optional[str]) -> list[str]:
    """The transformers model classes registered for `model_type` (causal LM first, then the rest)."""
    if not model_type:
        return []
    from transformers.models.auto import modeling_auto

    found: list[str] = []
    mappings = [modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, modeling_auto.MODEL_MAPPING_NAMES]
    mappings += [v for k, v in sorted(vars(modeling_auto).items()) if k.endswith("_MAPPING_NAMES") and isinstance(v, dict)]
    for mapping in mappings:
        value = mapping.get(model_type)
        for cls_name in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(cls_name, str) and cls_name not in found and not cls_name.endswith("Config"):
                found.append(cls_name)
    return found
