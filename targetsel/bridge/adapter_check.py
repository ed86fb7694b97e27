"""Will this saved adapter load onto this model? `check_adapter(model, adapter_dir)`.

Adapters stop applying without an error when module names drift between the class they were
trained on and the one they are loaded onto: `PeftModel.from_pretrained` loads weights with a
non-strict `load_state_dict`, so a key that names no module is dropped silently. This reads the
adapter's `adapter_config.json` and only the header of its weights file (keys, shapes, dtypes: no
tensor data), asks a real PEFT what the config attaches to on this model (`dry_run`), follows every
saved key through PEFT's own load steps on a meta skeleton (`adapter_load`), and where keys would
be dropped, looks for the rename that explains the drift (`adapter_renames`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from torch import nn

from targetsel.bridge.adapter_load import AdapterLoader, module_of_key
from targetsel.bridge.adapter_renames import Translation, find_translation
from targetsel.bridge.adapter_text import render_report
from targetsel.bridge.weights_header import TensorInfo, read_bin_header, read_safetensors_header
from targetsel.errors import AdapterFileError, ConfigError, NotAModuleError

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")  # PEFT's order of preference


@dataclass(frozen=True)
class Mismatch:
    """A saved tensor whose shape differs from the adapter layer it loads into. `detail` names the
    dimensions that differ (`rank`, `in_features`, …)."""

    key: str
    saved: tuple[int, ...]
    expected: tuple[int, ...]
    detail: str


@dataclass(frozen=True)
class AdapterReport:
    """What loading a saved adapter onto a model does. `attached`: modules (and `module.param`
    targets) the config puts adapter layers on; `saved_modules`: modules_to_save wrappers;
    `loaded`: saved keys that land; `renamed`: saved key → name transformers' conversion gives it on
    load (they land); `fused`: saved keys the conversion merges into fused tensors (per-expert
    LoRA weights into a fused-experts layer); `dead`: saved keys that match no module (dropped silently); `unweighted`:
    targeted modules the file has no weights for; `mismatches`: shapes that differ;
    `unmatched_targets`: `target_modules` entries that match no module of this model;
    `translation`: a rename that explains the dead keys, with the `key_mapping` that loads them;
    `error`: what `PeftModel.from_pretrained` raises, None when it loads."""

    adapter: str
    weights_file: str
    model_class: str
    peft_type: str
    saved_from: Optional[str]
    keys: int
    attached: tuple[str, ...] = ()
    saved_modules: tuple[str, ...] = ()
    loaded: int = 0
    renamed: Mapping[str, str] = field(default_factory=dict)
    fused: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    unweighted: tuple[str, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()
    unmatched_targets: tuple[str, ...] = ()
    translation: Optional[Translation] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """Every saved weight lands where it belongs and every targeted module gets its weights."""
        return self.error is None and not self.dead and not self.mismatches and not self.unweighted

    @property
    def dropped(self) -> int:
        """Saved keys that would not reach the model (all of them when loading raises)."""
        return self.keys if self.error else len(self.dead) + len(self.mismatches)

    def to_dict(self) -> dict[str, Any]:
        t = self.translation
        return {
            "adapter": self.adapter, "weights_file": self.weights_file, "model_class": self.model_class,
            "peft_type": self.peft_type, "saved_from": self.saved_from, "keys": self.keys, "ok": self.ok,
            "attached": list(self.attached), "saved_modules": list(self.saved_modules), "loaded": self.loaded,
            "renamed": dict(self.renamed), "fused": list(self.fused), "dead": list(self.dead),
            "unweighted": list(self.unweighted),
            "mismatches": [{"key": m.key, "saved": list(m.saved), "expected": list(m.expected), "detail": m.detail}
                           for m in self.mismatches],
            "unmatched_targets": list(self.unmatched_targets), "error": self.error,
            "translation": None if t is None else {
                "rule": t.rule, "names": dict(t.names), "key_mapping": dict(t.key_mapping),
                "still_dead": list(t.still_dead), "still_mismatched": list(t.still_mismatched)},
        }

    def __str__(self) -> str:
        return render_report(self)


def check_adapter(model: nn.Module, adapter: "str | os.PathLike[str]") -> AdapterReport:
    """What `PeftModel.from_pretrained(model, adapter)` would do, from the adapter's config and the
    header of its weights file: where each saved key goes, which are dropped, which targeted
    modules get no weights, which shapes differ, and the rename that explains drifted names.

    `adapter` is the directory `save_pretrained` wrote, or the path of its adapter_config.json.
    `model` is the base model (built on the meta device is enough). Raises `AdapterFileError` when
    the adapter cannot be read, `NotAModuleError` / `ConfigError` for a bad model or config."""
    if not isinstance(model, nn.Module):
        raise NotAModuleError(f"check_adapter() needs a torch.nn.Module, got {type(model).__name__}")
    _require_base_model(model)
    config_path, weights_path = locate(adapter)
    config = read_config(config_path)
    tensors = read_weights(weights_path)
    from targetsel.bridge.verify import dry_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        injection = dry_run(model, config)
        loader = AdapterLoader(model, config)
        outcome = loader.load(tensors)
        translation = find_translation(model, loader, tensors, outcome) if outcome.dead else None
    mismatches = tuple(_mismatch(loader, *m) for m in outcome.mismatched)
    return AdapterReport(
        adapter=str(config_path.parent), weights_file=weights_path.name, model_class=type(model).__name__,
        peft_type=str(getattr(config.peft_type, "value", config.peft_type)),
        saved_from=(getattr(config, "auto_mapping", None) or {}).get("base_model_class"),
        keys=len(tensors), attached=tuple(injection.modules) + tuple(injection.parameters),
        saved_modules=tuple(injection.saved), loaded=_loaded(outcome, tensors), renamed=dict(outcome.renamed),
        fused=tuple(_natural(outcome.fused)), dead=tuple(_natural(outcome.dead)),
        unweighted=tuple(dict.fromkeys(module_of_key(k) for k in outcome.missing)), mismatches=mismatches,
        unmatched_targets=_unmatched_targets(model, config), translation=translation,
        error=outcome.error or injection.error,
    )


# ---------------------------------------------------------------------------- reading the adapter


def locate(adapter: Any) -> tuple[Path, Path]:
    """(adapter_config.json, weights file) of an adapter directory or config path."""
    if not isinstance(adapter, (str, os.PathLike)) or not str(adapter).strip():
        raise AdapterFileError(
            f"check_adapter() needs the adapter's directory or its adapter_config.json path, got {adapter!r}"
        )
    path = Path(adapter).expanduser()
    if not path.exists():
        raise AdapterFileError(
            f"no adapter at {str(path)!r}: pass the directory PeftModel.save_pretrained() wrote "
            f"({CONFIG_NAME} and adapter_model.safetensors)"
        )
    config_path = path if path.is_file() else path / CONFIG_NAME
    if not config_path.is_file():
        present = sorted(p.name for p in path.iterdir())[:8]
        raise AdapterFileError(
            f"{str(path)!r} holds no {CONFIG_NAME} (it holds {len(list(path.iterdir()))} entries: "
            f"{', '.join(present) or 'none'}); pass the directory save_pretrained() wrote"
        )
    for name in WEIGHT_NAMES:
        if (config_path.parent / name).is_file():
            return config_path, config_path.parent / name
    raise AdapterFileError(
        f"{str(config_path.parent)!r} has {config_path.name} but no weights: neither {' nor '.join(WEIGHT_NAMES)}. "
        "Only the config was saved; save the adapter with PeftModel.save_pretrained()."
    )


def read_config(path: Path):
    """The PEFT config in `path`, read as `PeftConfig.from_pretrained` reads a local directory
    (peft/config.py: from_json_file, check_kwargs, from_peft_type), with errors that name the file."""
    from peft import PeftConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    try:
        data = PeftConfig.from_json_file(str(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"cannot read {str(path)!r} as JSON: {exc}") from None
    if not isinstance(data, dict) or "peft_type" not in data:
        raise AdapterFileError(f"{str(path)!r} is not a PEFT adapter config: it has no 'peft_type' (e.g. \"LORA\")")
    if data["peft_type"] not in PEFT_TYPE_TO_CONFIG_MAPPING:
        known = ", ".join(sorted(str(getattr(k, "value", k)) for k in PEFT_TYPE_TO_CONFIG_MAPPING))
        raise AdapterFileError(f"{str(path)!r}: unknown peft_type {data['peft_type']!r}; the installed peft knows {known}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return PeftConfig.from_peft_type(**PeftConfig.check_kwargs(**data))
        except (TypeError, ValueError) as exc:
            raise AdapterFileError(f"{str(path)!r}: peft rejects this config: {exc}") from None


def read_weights(path: Path) -> dict[str, TensorInfo]:
    return read_safetensors_header(path) if path.suffix == ".safetensors" else read_bin_header(path)


def _require_base_model(model: nn.Module) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ConfigError(
            f"{type(model).__name__} already holds PEFT adapter layers: check_adapter() checks an adapter against "
            "the base model it is loaded onto. Pass the model as built before get_peft_model / from_pretrained."
        )


# ---------------------------------------------------------------------------- findings


def _mismatch(loader: AdapterLoader, key: str, model_key: str, saved: tuple, expected: tuple) -> Mismatch:
    layer = loader.layer_of(model_key)
    names = _dim_names(key, len(expected), type(layer).__name__ if layer is not None else "")
    if not names:  # a base weight saved with the adapter (a targeted embedding, modules_to_save)
        names = _base_dim_names(loader.owner_of(model_key), key.rpartition(".")[2])
    diffs = [
        f"{names[i] if i < len(names) else f'dim {i}'} {a} saved, {b} here"
        for i, (a, b) in enumerate(zip(saved, expected)) if a != b
    ]
    diffs = list(dict.fromkeys(diffs))  # a conv kernel differs in both of its dimensions
    if len(saved) != len(expected):
        diffs = [f"{len(saved)} dimensions saved, {len(expected)} here"]
    return Mismatch(key=key, saved=tuple(saved), expected=tuple(expected), detail=", ".join(diffs))


def _dim_names(key: str, ndim: int, layer: str) -> list[str]:
    """What each dimension of a LoRA-family tensor means: lora_A (r, in_features[, kernel…]),
    lora_B (out_features, r[, 1…]), lora_embedding_A (r, num_embeddings), lora_embedding_B
    (embedding_dim, r); a ParamWrapper (fused experts) stacks the rank of every expert."""
    rank = "rank × experts" if layer == "ParamWrapper" else "rank"
    conv = ndim > 2
    last = key.rsplit(".", 2)[-2:]
    if last[-1] == "lora_embedding_A":
        return [rank, "num_embeddings"]
    if last[-1] == "lora_embedding_B":
        return ["embedding_dim", rank]
    if last[0] == "lora_A" or last[-1] == "lora_A":
        return [rank, "in_channels" if conv else "in_features"] + ["kernel"] * (ndim - 2)
    if last[0] == "lora_B" or last[-1] == "lora_B":
        return ["out_channels" if conv else "out_features", rank] + ["kernel"] * (ndim - 2)
    if last[-1] == "lora_magnitude_vector":
        return ["out_features"] if ndim == 1 else ["dim 0", "out_channels"]
    return []


def _base_dim_names(owner: Optional[nn.Module], param: str) -> list[str]:
    """The dimensions of a plain layer's own weight or bias."""
    if isinstance(owner, nn.Embedding) and param == "weight":
        return ["num_embeddings", "embedding_dim"]
    if isinstance(owner, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        conv = not isinstance(owner, nn.Linear)
        out, inp = ("out_channels", "in_channels") if conv else ("out_features", "in_features")
        return [out, inp] + ["kernel"] * 3 if param == "weight" else [out]
    return []


def _unmatched_targets(model: nn.Module, config: Any) -> tuple[str, ...]:
    """Entries of a `target_modules` list that match no module by PEFT's rule (exact name or dotted suffix)."""
    targets = getattr(config, "target_modules", None)
    if not isinstance(targets, (list, set, tuple)):
        return ()
    from targetsel.model.index import get_index

    names = get_index(model).names
    unmatched = {e for e in targets if e not in names and not any(n.endswith("." + e) for n in names)}
    if unmatched and str(getattr(config.peft_type, "value", config.peft_type)) == "LORA":
        from targetsel.bridge.verify import converted_names

        unmatched -= converted_names(model, sorted(unmatched))  # PEFT's MoE conversion targets them as parameters
    return tuple(sorted(unmatched))


def _loaded(outcome, tensors) -> int:
    """Saved keys that reach the model: placed as they are, or fused by a conversion whose every
    result landed (a conversion result that finds no place shows up in `dead` under its own name)."""
    converted_failed = [k for k in outcome.dead if k not in tensors]
    converted_failed += [m[0] for m in outcome.mismatched if m[0] not in tensors]
    fused = 0 if converted_failed else len(outcome.fused)
    return len(outcome.placed) - sum(m[0] in tensors for m in outcome.mismatched) + fused


def _natural(keys) -> list[str]:
    """Keys in natural order (`layers.2` before `layers.10`), as a reader scans them."""
    import re

    return sorted(keys, key=lambda k: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)])
