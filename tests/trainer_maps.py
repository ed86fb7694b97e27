"""What two trainers declare, per architecture, as the vision/audio tower, the projector (aligner)
and the language model — copied here as data, and compared module by module with targetsel's
`component:` atoms.

Sources (neither project is installed; read from their repositories):

- ms-swift, `swift/model/model_arch.py` (formerly `swift/llm/model/model_arch.py`) at commit
  5f50af04fcadcba280855f29a921b2239e24dcaa (the `transformers>=4.52` branch of each entry), with each
  entry's classes taken from the `ModelMeta(..., model_arch=..., architectures=[...])` registrations
  in `swift/model/models/*.py` at 3602360a562313afbf2ef6065fdf61f271a2c5b9. Keys are parameter-name
  prefixes (`str.startswith`, `swift/optimizers/multimodal.py: get_param_startswith`); the aligner
  is taken out of the vision tower. `generator` (talker, vocoder) is frozen with the tower.
- LLaMA-Factory, `src/llamafactory/model/model_utils/visual.py` at commit
  713b5a3f959d0c647d46f7ab76cbb8fde8155586 (`COMPOSITE_MODELS`, keyed by `config.model_type`). Keys
  are substrings of parameter names (`forbidden_module in name`); unset keys default to
  `multi_modal_projector` / `vision_tower` / `language_model`, `lm_head`.

Trainer keys written for transformers-4 module names (`language_model`, `thinker.audio_tower`) are
translated with transformers' own checkpoint conversion mapping for the model
(`get_model_conversion_mapping`), as transformers does when it loads such a checkpoint.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

_LLAVA_HF = {"language": ["model.language_model", "lm_head"], "projector": ["model.multi_modal_projector"],
             "tower": ["model.vision_tower"]}
_QWEN2_VL = {"language": ["model.language_model", "lm_head"], "projector": ["model.visual.merger"], "tower": ["model.visual"]}
_QWEN3_VL = {"language": ["model.language_model", "lm_head"],
             "projector": ["model.visual.merger", "model.visual.deepstack_merger_list"], "tower": ["model.visual"]}
_GLM4V = {"language": ["model.language_model", "lm_head"], "projector": ["model.visual.merger"], "tower": ["model.visual"]}
_GEMMA3N = {"language": ["model.language_model", "lm_head"], "projector": ["model.embed_vision", "model.embed_audio"],
            "tower": ["model.vision_tower", "model.audio_tower"]}

# model_type → (ms-swift arch name, keys). Where a class is registered under two archs (PaddleOCR-VL under
# `keye_vl` and `paddleocr_vl`, Qwen3.5 under `qwen2_vl` and the embedding-model `qwen3_5`), the one
# whose keys name this class's modules.
MS_SWIFT = {
    "diffusion_gemma": ("diffusion_gemma", {"language": ["model.encoder.language_model", "model.decoder", "lm_head"],
                                            "projector": ["model.encoder.embed_vision"],
                                            "tower": ["model.encoder.vision_tower"]}),
    "ernie4_5_vl_moe": ("ernie_vl", {"language": ["model", "lm_head"], "projector": ["model.resampler_model"],
                                     "tower": ["vision_model"]}),
    "florence2": ("florence", {"language": ["language_model"], "tower": ["vision_tower"]}),
    "gemma3": ("llava_hf", _LLAVA_HF),
    "gemma3n": ("gemma3n", _GEMMA3N),
    "gemma4": ("gemma3n", _GEMMA3N),
    "gemma4_unified": ("gemma4_unified", {"language": ["model.language_model", "lm_head"],
                                          "projector": ["model.embed_vision", "model.embed_audio"]}),
    "glm4v": ("glm4v", _GLM4V),
    "glm4v_moe": ("glm4v", _GLM4V),
    "glm_ocr": ("glm4v", _GLM4V),
    "got_ocr2": ("llava_hf", _LLAVA_HF),
    "hunyuan_vl": ("hunyuan_vl", {"language": ["model"], "projector": ["vit.perceive"], "tower": ["vit"]}),
    "idefics3": ("idefics3", {"language": ["model.text_model"], "projector": ["model.connector"],
                              "tower": ["model.vision_model"]}),
    "internvl": ("llava_hf", _LLAVA_HF),
    "llama4": ("llama4", {"language": ["language_model"], "projector": ["multi_modal_projector"], "tower": ["vision_model"]}),
    "llava": ("llava_hf", _LLAVA_HF),
    "llava_next": ("llava_hf", _LLAVA_HF),
    "llava_next_video": ("llava_next_video_hf", _LLAVA_HF),
    "llava_onevision": ("llava_hf", _LLAVA_HF),
    "minicpmv4_6": ("minicpmv4_6", {"language": ["model.language_model"], "projector": ["model.merger"],
                                    "tower": ["model.vision_tower"]}),
    "minimax_m3_vl": ("minimax_m3_vl", _LLAVA_HF),
    "mistral3": ("llava_hf", _LLAVA_HF),
    "mllama": ("llama3_2_vision", {"language": ["model.language_model", "lm_head"],
                                   "projector": ["model.multi_modal_projector"], "tower": ["model.vision_model"]}),
    "molmo2": ("molmo", {"language": ["model.transformer"], "projector": ["model.vision_backbone.image_projector"],
                         "tower": ["model.vision_backbone"]}),
    "muse_glimmer": ("muse_glimmer", {"language": ["model.language_model", "lm_head"],
                                      "projector": ["model.vision_adapter", "model.vision_projection"],
                                      "tower": ["model.vision_tower"]}),
    "paddleocr_vl": ("paddleocr_vl", {"language": ["model.language_model", "lm_head"], "projector": ["model.projector"],
                                      "tower": ["model.visual"]}),
    "paligemma": ("llava_hf", _LLAVA_HF),
    "pp_chart2table": ("llava_hf", _LLAVA_HF),
    "qwen2_5_omni": ("qwen2_5_omni", {"language": ["thinker.model", "thinker.lm_head"],
                                      "projector": ["thinker.audio_tower.proj", "thinker.visual.merger"],
                                      "tower": ["thinker.audio_tower", "thinker.visual"],
                                      "generator": ["talker", "token2wav"]}),
    "qwen2_5_vl": ("qwen2_vl", _QWEN2_VL),
    "qwen2_audio": ("qwen2_audio", {"language": ["language_model"], "projector": ["multi_modal_projector"],
                                    "tower": ["audio_tower"]}),
    "qwen2_vl": ("qwen2_vl", _QWEN2_VL),
    "qwen3_5": ("qwen2_vl", _QWEN2_VL),
    "qwen3_5_moe": ("qwen2_vl", _QWEN2_VL),
    "qwen3_asr": ("qwen3_asr", {"language": ["thinker.model", "thinker.lm_head"],
                                "projector": ["thinker.audio_tower.proj1", "thinker.audio_tower.proj2"],
                                "tower": ["thinker.audio_tower"]}),
    "qwen3_omni_moe": ("qwen3_omni", {"language": ["thinker.model", "thinker.lm_head"],
                                      "projector": ["thinker.audio_tower.proj1", "thinker.audio_tower.proj2",
                                                    "thinker.visual.merger", "thinker.visual.merger_list"],
                                      "tower": ["thinker.audio_tower", "thinker.visual"],
                                      "generator": ["talker", "code2wav"]}),
    "qwen3_vl": ("qwen3_vl", _QWEN3_VL),
    "qwen3_vl_moe": ("qwen3_vl", _QWEN3_VL),
    "shieldgemma2": ("llava_hf", _LLAVA_HF),
}


def _lf(projector=None, tower=None, language=None) -> dict:
    return {"projector": projector or ["multi_modal_projector"], "tower": tower or ["vision_tower"],
            "language": language or ["language_model", "lm_head"]}


_LF_QWEN_VL = _lf(["visual.merger"], ["visual.patch_embed", "visual.blocks"])
_LF_QWEN3_VL = _lf(["visual.merger"], ["visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list"])
_LF_QWEN3_5 = _lf(["model.visual.merger"], ["visual.pos_embed", "visual.patch_embed", "visual.blocks"])

# model_type → keys, for the model types of the installed transformers (dots_ocr, interns1, Keye, kimi_vl,
# minicpmv, minicpmo and moss_vl are remote-code models, not in it).
LLAMA_FACTORY = {
    "gemma3": _lf(),
    "gemma3n": _lf(tower=["vision_tower", "audio_tower"]),
    "gemma4": _lf(["model.embed_vision", "model.embed_audio"], ["vision_tower", "audio_tower"]),
    "glm4v": _LF_QWEN_VL,
    "glm4v_moe": _LF_QWEN_VL,
    "glm_ocr": _LF_QWEN_VL,
    "internvl": _lf(),
    "llama4": _lf(tower=["vision_model"]),
    "llava": _lf(),
    "llava_next": _lf(),
    "llava_next_video": _lf(),
    "minicpmv4_6": _lf(["model.merger"], ["model.vision_tower"], ["model.language_model", "lm_head"]),
    "mistral3": _lf(["model.multi_modal_projector"]),
    "mllama": _lf(tower=["vision_model"]),
    "paligemma": _lf(),
    "qwen2_audio": _lf(tower=["audio_tower"]),
    "qwen2_5_omni_thinker": _lf(["visual.merger", "audio_tower.proj"], ["visual.patch_embed", "visual.blocks", "audio_tower"],
                                ["model", "lm_head"]),
    "qwen2_vl": _LF_QWEN_VL,
    "qwen2_5_vl": _LF_QWEN_VL,
    "qwen3_vl": _LF_QWEN3_VL,
    "qwen3_vl_moe": _LF_QWEN3_VL,
    "qwen3_omni_moe_thinker": _lf(["visual.merger", "audio_tower.proj"],
                                  ["visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list",
                                   "audio_tower"]),
    "qwen3_5": _LF_QWEN3_5,
    "qwen3_5_moe": _LF_QWEN3_5,
    "video_llava": _lf(),
}

OURS = {"vision": "tower", "audio": "tower", "projector": "projector", "language": "language", "head": "language"}


@dataclass
class Comparison:
    """One architecture compared with one trainer, over the modules that own parameters."""

    model_type: str
    compared: int = 0  # modules the trainer labels tower / projector / language / generator
    agreed: int = 0
    missing: list = field(default_factory=list)  # trainer keys that name no parameter of this model
    differ: dict = field(default_factory=dict)  # (trainer label, our label) → module names

    @property
    def layout_differs(self) -> bool:
        """Every key of some trainer category names nothing here: the entry is for another module layout."""
        return bool(self.missing) and self.compared == 0

    @property
    def rate(self) -> float:
        return self.agreed / self.compared if self.compared else 1.0


def translate(model, keys: list) -> list:
    """Trainer keys as the installed transformers names those modules (transformers' conversion mapping)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # an older transformers: keys stay as written
        return list(keys)
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    return [rename_source_key(k + ".weight", renamings, converters)[0].removesuffix(".weight") for k in keys]


def _label(param_name: str, keys: dict, substring: bool):
    """The trainer's label for a parameter: its most specific (longest) matching key decides."""
    best, label = -1, None
    for category, names in keys.items():
        for key in names:
            hit = key in param_name if substring else param_name.startswith(key)
            if hit and len(key) > best:
                best, label = len(key), category
    return label


def compare(model_type: str, model, keys: dict, substring: bool) -> Comparison:
    from targetsel import select

    owners = [(n, next(iter(m._parameters))) for n, m in model.named_modules() if n and m._parameters
              and any(p is not None for p in m._parameters.values())]
    param_names = [f"{n}.{p}" for n, p in owners]

    def names_something(key: str) -> bool:
        return any((key in p) if substring else p.startswith(key) for p in param_names)

    if not substring:  # a key that names nothing as written may be a transformers-4 name
        keys = {c: [k if names_something(k) else t for k, t in zip(ks, translate(model, ks))] for c, ks in keys.items()}
    keys = {c: list(k) for c, k in keys.items() if k}
    ours = {}
    for component, label in OURS.items():
        for name in select(model).component(component).names():
            ours[name] = label
    result = Comparison(model_type)
    result.missing = [key for names in keys.values() for key in names if not names_something(key)]
    complete = {c: k for c, k in keys.items() if any(key not in result.missing for key in k)}
    if any(c not in complete for c in keys if c != "generator"):
        return result  # a category names nothing here: another layout, not comparable
    for (name, _), param in zip(owners, param_names):
        theirs = _label(param, keys, substring)
        if theirs is None:
            continue
        theirs = None if theirs == "generator" else theirs
        result.compared += 1
        mine = ours.get(name)
        if mine == theirs:
            result.agreed += 1
        else:
            result.differ.setdefault((theirs, mine), []).append(name)
    return result


def summary(results: list) -> dict:
    compared = [r for r in results if not r.layout_differs]
    total = sum(r.compared for r in compared)
    agreed = sum(r.agreed for r in compared)
    exact = sum(1 for r in compared if r.agreed == r.compared)
    return {"architectures": len(compared), "exact": exact, "modules": total, "agreed": agreed,
            "not_comparable": sorted(r.model_type for r in results if r.layout_differs)}


def differences(results: list) -> dict:
    """(trainer label, our label) → [(model_type, first module, count)]."""
    out = collections.defaultdict(list)
    for r in results:
        for pair, names in sorted(r.differ.items(), key=lambda kv: str(kv[0])):
            out[pair].append((r.model_type, names[0], len(names)))
    return dict(out)
