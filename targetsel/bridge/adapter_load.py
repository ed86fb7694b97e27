"""Where each tensor of a saved adapter goes when PEFT loads it — found without its data.

`PeftModel.from_pretrained(model, dir)` builds the adapter layers from `adapter_config.json`, then
`load_adapter` reads the weights and `set_peft_model_state_dict` maps their keys onto the model
(peft 0.21.2, peft/peft_model.py `load_adapter`, peft/utils/save_and_load.py
`set_peft_model_state_dict`): the optional `key_mapping`, transformers' checkpoint conversion
(`convert_peft_adapter_state_dict_for_transformers`, LoRA on a model type with a conversion
mapping), the `modules_to_save` / trainable-token load maps, the tuner's adapter-name insertion,
then a non-strict `load_state_dict`. Here the same PEFT functions run, in the same order, on a
meta skeleton of the model with the adapter injected and on meta tensors of the saved shapes; what
`load_state_dict` would do is read off the keys: a saved key with no place in the model is dropped
without a word (non-strict), a model adapter key nothing fills keeps its fresh initialisation
(PEFT warns), a shape that differs makes torch raise. Each tensor is followed by identity, so
every verdict names the key as it is saved.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from targetsel.bridge.injection import skeleton
from targetsel.bridge.weights_header import TensorInfo, torch_dtype

ADAPTER = "default"
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoadOutcome:
    """What loading the saved keys does. `placed`: saved key → model key it loads into (without the
    `base_model.model.` prefix); `renamed`: saved key → the key PEFT's transformers conversion gave
    it; `fused`: saved keys a conversion merged into other tensors; `dead`: saved keys with no
    place; `missing`: adapter keys of the model (checkpoint form) that nothing fills; `mismatched`:
    (saved key, model key, saved shape, model shape); `error`: what from_pretrained raises."""

    placed: Mapping[str, str]
    renamed: Mapping[str, str]
    fused: tuple[str, ...]
    dead: tuple[str, ...]
    missing: tuple[str, ...]
    mismatched: tuple[tuple[str, str, tuple, tuple], ...]
    error: Optional[str] = None


class AdapterLoader:
    """A meta skeleton of `model` with the adapter of `config` injected, as from_pretrained builds
    it; `load()` maps a set of saved keys onto it. Built once, loaded as often as needed (the
    renames are proven by loading the renamed keys again)."""

    def __init__(self, model: torch.nn.Module, config: Any):
        from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, PeftModel

        loaded = copy.deepcopy(config)
        loaded.inference_mode = True  # what from_pretrained(is_trainable=False) sets
        self.config = loaded
        self.error: Optional[str] = None
        self.peft_model = None
        cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(loaded.task_type, PeftModel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.peft_model = cls(skeleton(model), loaded, ADAPTER, low_cpu_mem_usage=True)
            except Exception as exc:  # whatever PEFT raises is the answer
                self.error = f"{type(exc).__name__}: {exc}"
                return
        self.state = self.peft_model.state_dict()

    def layer_of(self, model_key: str):
        """The adapter layer of the adapted skeleton that holds `model_key` (None when there is none)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        parts = model_key.split(".")
        for end in range(len(parts) - 1, 0, -1):
            try:
                module = self.peft_model.get_submodule(PEFT_PREFIX + ".".join(parts[:end]))
            except AttributeError:
                continue
            if isinstance(module, BaseTunerLayer):
                return module
        return None

    def owner_of(self, model_key: str):
        """The module of the adapted skeleton whose own parameter `model_key` is (None when there is none)."""
        try:
            return self.peft_model.get_submodule(PEFT_PREFIX + model_key.rpartition(".")[0])
        except AttributeError:
            return None

    def load(self, tensors: Mapping[str, TensorInfo], key_mapping: Optional[Mapping[str, str]] = None) -> LoadOutcome:
        saved = {k: torch.empty(info.shape, dtype=torch_dtype(info.dtype), device="meta") for k, info in tensors.items()}
        if self.peft_model is None:
            return LoadOutcome({}, {}, (), tuple(saved), (), (), self.error)
        try:
            return self._load(saved, key_mapping)
        except Exception as exc:  # PEFT's or transformers' conversion raising, as from_pretrained would
            return LoadOutcome({}, {}, (), tuple(saved), (), (), f"{type(exc).__name__}: {exc}")

    # The steps of load_peft_weights and set_peft_model_state_dict in their order, each PEFT's own
    # function where PEFT has one, kept in one function so the order reads as PEFT runs it.
    def _load(self, saved: dict[str, torch.Tensor], key_mapping) -> LoadOutcome:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
        from peft.utils.other import AuxiliaryTrainingWrapper

        origin = {id(t): k for k, t in saved.items()}
        if key_mapping and not self.config.is_prompt_learning:
            saved = apply_key_mapping(saved, key_mapping)
        given = dict(saved)
        state = dict(saved)
        model = self.peft_model
        if _converts(model):
            from peft.utils.transformers_weight_conversion import convert_peft_adapter_state_dict_for_transformers

            state = convert_peft_adapter_state_dict_for_transformers(
                model=model, peft_config=self.config, adapter_state_dict=state, adapter_name=ADAPTER
            )
        given_key = {id(t): k for k, t in given.items()}
        renamed = {
            origin[id(t)]: k.removeprefix(PEFT_PREFIX)
            for k, t in state.items() if id(t) in origin and given_key.get(id(t)) != k
        }
        error = None
        missing_saved: list[str] = []
        for name, module in model.named_modules():
            if isinstance(module, AuxiliaryTrainingWrapper):
                for k, stored in module.adapter_state_dict_load_map(ADAPTER).items():
                    lookup = f"{name}.{k}"
                    if lookup not in given:  # set_peft_model_state_dict indexes the given dict: KeyError
                        missing_saved.append(lookup)
                        error = error or f"KeyError: {lookup!r}"
                        continue
                    state[f"{name}.{stored}"] = given[lookup]
                    state.pop(lookup, None)
        tuner = PEFT_TYPE_TO_TUNER_MAPPING[self.config.peft_type]
        state = tuner._remap_adapter_state_dict_for_load(
            model=model, config=self.config, adapter_name=ADAPTER, state_dict=state
        )
        placed: dict[str, str] = {}
        dead: list[str] = []
        mismatched = []
        landed_tensors = set()
        for key, tensor in state.items():
            source = origin.get(id(tensor))
            if key not in self.state:
                dead.append(source or key)
                continue
            landed_tensors.add(id(tensor))
            if source is not None:
                placed[source] = key.removeprefix(PEFT_PREFIX)
            if tuple(self.state[key].shape) != tuple(tensor.shape):
                mismatched.append((source or key, key.removeprefix(PEFT_PREFIX), tuple(tensor.shape),
                                   tuple(self.state[key].shape)))
        fused = tuple(k for t_id, k in origin.items() if k not in placed and k not in dead and t_id not in landed_tensors)
        if mismatched and error is None:
            first = mismatched[0]
            error = (f"RuntimeError: size mismatch for {PEFT_PREFIX}{first[1]}: copying a param with shape "
                     f"{torch.Size(first[2])} from checkpoint, the shape in current model is {torch.Size(first[3])}")
        missing = self._missing(set(state), tuner) + missing_saved
        return LoadOutcome(placed, renamed, fused, tuple(dict.fromkeys(dead)), tuple(dict.fromkeys(missing)),
                           tuple(mismatched), error)

    def _missing(self, filled: set[str], tuner) -> list[str]:
        """Adapter keys of the model nothing fills, filtered as load_adapter filters them, in checkpoint form."""
        from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

        prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(self.config.peft_type, "")
        out = []
        for key in self.state:
            if key in filled or not (prefix in key and ADAPTER in key) or _shared(key):
                continue
            out.append(tuner._remove_adapter_name_from_key(key, ADAPTER))
        return out


def _shared(key: str) -> bool:
    """Parameters PeftModel.from_pretrained does not expect in a checkpoint (its `is_shared_parameter`)."""
    return "vblora_vector_bank" in key or "prompt_encoder" in key or ".tinylora_v." in key


def _converts(model) -> bool:
    """Does set_peft_model_state_dict run transformers' conversion on this model (transformers >= 5)?"""
    try:
        from peft.import_utils import is_transformers_ge_v5
    except ImportError:  # older peft: no conversion step
        return False
    return bool(is_transformers_ge_v5 and hasattr(getattr(model, "config", None), "model_type"))


def apply_key_mapping(saved: Mapping[str, Any], key_mapping: Mapping[str, str]) -> dict[str, Any]:
    """`load_peft_weights(..., key_mapping=…)`: the PEFT prefix set aside, the first pattern that
    matches rewrites the key (peft/utils/save_and_load.py, load_peft_weights)."""
    out = {}
    for key, value in saved.items():
        prefix = PEFT_PREFIX if key.startswith(PEFT_PREFIX) else "base_model." if key.startswith("base_model.") else None
        if prefix is None:  # PEFT raises on such a key too
            raise ValueError(f"key_mapping needs keys under 'base_model.', got {key!r}")
        rest = key[len(prefix):]
        for pattern, replacement in key_mapping.items():
            new, count = re.subn(pattern, replacement, rest)
            if count:
                rest = new
                break
        out[prefix + rest] = value
    return out


def module_of_key(key: str) -> str:
    """The module a saved key belongs to: `base_model.model.` and the adapter's own segments
    (`lora_A.weight`, `lora_embedding_A`, `base_layer.weight`, `token_adapter…`) removed."""
    parts = key.removeprefix(PEFT_PREFIX).split(".")
    while len(parts) > 1 and (parts[-1] in ("weight", "bias", "base_layer", "token_adapter")
                              or _is_adapter_segment(parts[-1])):
        parts.pop()
    return ".".join(parts)


def _is_adapter_segment(segment: str) -> bool:
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    return any(segment.startswith(p) for p in set(PEFT_TYPE_TO_PREFIX_MAPPING.values()) if p)
