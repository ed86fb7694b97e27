"""Trainer exports, judged as the trainer runs them: each trainer's expansion of the exported keys
(TRL's own installed functions; a replay of the cited version for the trainers that cannot be
installed beside transformers 5 / peft 0.21), then a real `get_peft_model` on a fresh model
(tests/oracle.py). A table of models (a VLM with a frozen tower, a composite LLaVA, MoE models, a
suffix trap, a substring trap) × queries × trainers; every refusal pinned by its message."""

from __future__ import annotations

import functools
import types
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model

import oracle
import trainer_models as tm
from targetsel import ExportError, TargetselError, select
from targetsel.bridge.exports import TRAINERS, export, trainer_module
from targetsel.bridge.exports import axolotl, llamafactory, swift, unsloth
from targetsel.bridge.exports import trl as trl_export
from targetsel.bridge.exports._common import build_request, judge

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the preflight's TargetselWarnings (frozen tower …)

SUBSTRING = "by substring on composite models"
LIST_ONLY = "list"  # LLaMA-Factory / unsloth: no regex, the suffix rule over-matches
NO_PARAMETERS = "no key for PEFT's target_parameters"
CONFLICT = "lora_conflict_keys"
SWIFT_SKIPS = "skips every NonDynamicallyQuantizableLinear"

# (model, query, (parameters query, pattern) or None, {trainer: refusal message} — every other trainer is exact)
CASES = [
    ("demo", "linear & trainable - type:PLoRA - under:(type:PLoRA)", None, {}),
    ("demo", "glob:vision_tower.**.{q,v}_proj", None, {}),
    ("llava", "linear & trainable", None, {}),
    ("llava", "glob:**.{q,v}_proj", None, {}),
    ("llava_substring_trap", "glob:**.layers.0.mlp.down_proj", None, {"llamafactory": SUBSTRING}),
    ("llava_substring_trap", "glob:**.mlp.down_proj*", None, {}),
    ("qwen2_vl", "glob:**.patch_embed.proj", None, {"llamafactory": CONFLICT}),
    ("qwen3_moe", "glob:**.self_attn.{q,v}_proj", ("glob:**.mlp.experts", "gate_up_proj$"), {"llamafactory": NO_PARAMETERS}),
    ("qwen3_moe", None, ("glob:**.mlp.experts", None), {"llamafactory": NO_PARAMETERS}),
    ("per_expert_moe", "glob:**.q_proj | glob:**.shared.down_proj", None, {}),
    ("suffix_trap", "glob:attn.q_proj", None, {"llamafactory": LIST_ONLY, "unsloth": LIST_ONLY}),
    ("suffix_trap", "glob:block.attn.q_proj", None, {}),
    ("embed_tokens", "type:Embedding | glob:**.q_proj", None, {}),
    ("mha", "glob:attn.out_proj", None, {"swift": SWIFT_SKIPS}),
]


@functools.lru_cache(maxsize=None)
def shared(name: str):
    """One instance per model for the export side (export never changes the model)."""
    return tm.BUILDERS[name]()


def selections(model, query, parameters):
    sel = select(model, query) if query is not None else None
    psel = select(model, parameters[0]).parameters(parameters[1]) if parameters else None
    return sel, psel


def run_export(trainer, model, query, parameters, **kw):
    sel, psel = selections(model, query, parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sel is None:
            return export(psel, trainer, **kw), sel, psel
        return export(sel, trainer, parameters=psel, **kw), sel, psel


def handoffs(trainer: str, keys: dict, model) -> list:
    """The LoraConfig(s) the trainer builds from the exported keys: TRL's own functions (installed),
    the replayed expansion(s) for the others."""
    if trainer == "trl":
        import trl

        configs = [trl.get_peft_config(trl.ModelConfig(**keys))]
    else:
        configs = [LoraConfig(**expand(keys, model)) for expand in trainer_module(trainer).EXPANSIONS]
    if not hasattr(model, "prepare_inputs_for_generation"):  # not a transformers model: no task-type wrapper
        for config in configs:
            config.task_type = None
    return configs


def case_id(case):
    return f"{case[0]}:{case[1] or case[2][0]}"


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_export_is_exact_under_the_trainers_rules_or_refused(case, trainer):
    name, query, parameters, refusals = case
    if trainer in refusals:
        with pytest.raises(ExportError, match=f"^{trainer} cannot adapt exactly") as info:
            run_export(trainer, shared(name), query, parameters)
        assert refusals[trainer] in str(info.value) and "Closest exact alternative: " in str(info.value)
        return
    keys, sel, psel = run_export(trainer, shared(name), query, parameters)
    for config in handoffs(trainer, keys, shared(name)):
        adapted = oracle.peft_adapts(tm.BUILDERS[name], config)
        assert adapted.error is None, adapted.error
        assert adapted.modules == tuple(sel.names() if sel is not None else ())
        # the oracle orders parameters of one module as PEFT wraps them (sorted), names() as the model registers them
        assert sorted(adapted.parameters) == sorted(psel.names() if psel is not None else ())
        assert not adapted.saved and not adapted.tokens


def test_selection_export_is_the_export_function():
    sel = select(shared("llava"), "glob:**.{q,v}_proj")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sel.export("llamafactory") == export(sel, "llamafactory")


@pytest.mark.parametrize("trainer", ["axolotl", "swift", "unsloth", "trl", "peft"])
def test_parameter_selection_export_is_the_export_function(trainer):
    psel = select(shared("qwen3_moe"), "glob:**.mlp.experts").parameters("gate_up_proj$")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = psel.export(trainer)
        assert keys == export(psel, trainer)
    # the fused parameters go under the trainer's target_parameters key (exactness: the table test above)
    assert [v for k, v in keys.items() if k.endswith("target_parameters")] == [["gate_up_proj"]], keys


def test_llamafactory_sets_the_freeze_flags_that_keep_the_selection():
    keys, _, _ = run_export("llamafactory", shared("llava"), "linear & frozen", None)
    assert keys["freeze_vision_tower"] is False and keys["freeze_multi_modal_projector"] is True
    keys, _, _ = run_export("llamafactory", shared("llava"), "linear & glob:**.multi_modal_projector.*", None)
    assert keys["freeze_multi_modal_projector"] is False and keys["freeze_vision_tower"] is True


def test_unsloth_avoids_the_keys_it_rewrites():
    keys, _, _ = run_export("unsloth", shared("embed_tokens"), "type:Embedding | glob:**.q_proj", None)
    assert "embed_tokens" not in keys["target_modules"] and "model.embed_tokens" in keys["target_modules"]
    keys, _, _ = run_export("unsloth", shared("per_expert_moe"), "glob:**.q_proj | glob:**.shared.down_proj", None)
    assert "down_proj" not in keys["target_modules"] and keys["target_parameters"] == []


def test_trl_never_hands_over_a_one_item_list_that_becomes_a_name_regex():
    keys, sel, _ = run_export("trl", shared("suffix_trap"), "glob:block.attn.q_proj", None)
    (value,) = keys["lora_target_modules"]
    assert value.startswith("^") and value.endswith("$")  # the item is the exact regex TRL turns it into


# ---------------------------------------------------------------------------- ranks and alphas

RANKS = {"glob:**.q_proj": 16}
ALPHAS = {"glob:**.v_proj": 32}


def adapted_ranks(make_model, config) -> dict:
    peft_model = get_peft_model(make_model(), config)
    base = peft_model.base_model.model
    return {n: (m.r["default"], m.lora_alpha["default"]) for n, m in base.named_modules() if hasattr(m, "lora_A")}


@pytest.mark.parametrize("trainer, refusal", [
    ("axolotl", None), ("unsloth", None), ("peft", None),
    ("llamafactory", "no per-module rank or alpha key"), ("swift", "no per-module rank or alpha key"),
    ("trl", "no per-module rank or alpha field"),
])
def test_ranks_and_alphas_where_the_trainer_has_keys(trainer, refusal):
    query = "glob:**.self_attn.{q,v}_proj"
    if refusal:
        with pytest.raises(ExportError, match=refusal):
            run_export(trainer, shared("qwen3_moe"), query, None, ranks=RANKS, alphas=ALPHAS)
        return
    keys, sel, _ = run_export(trainer, shared("qwen3_moe"), query, None, ranks=RANKS, alphas=ALPHAS)
    for config in handoffs(trainer, keys, shared("qwen3_moe")):
        config.r, config.lora_alpha = 4, 8  # the trainer's own defaults for what no key names
        got = adapted_ranks(tm.qwen3_moe, config)
        assert list(got) == sel.names()
        assert got == {n: (16 if n.endswith("q_proj") else 4, 32 if n.endswith("v_proj") else 8) for n in got}


def test_axolotl_refuses_alphas_its_schema_cannot_hold():
    with pytest.raises(ExportError, match=r"dict\[str, PositiveInt\] and cannot hold \[1\.5\]"):
        run_export("axolotl", shared("qwen3_moe"), "glob:**.self_attn.{q,v}_proj", None, alphas={"glob:**.v_proj": 1.5})


# ---------------------------------------------------------------------------- the replays' own rules


def test_axolotl_replay_drops_undeclared_keys_and_keeps_a_string_regex():
    model = shared("suffix_trap")
    kwargs = axolotl.expand({"lora_target_modules": "^attn\\.q_proj$", "lora_exclude_modules": ["attn"]}, model)
    assert kwargs["target_modules"] == "^attn\\.q_proj$" and kwargs["exclude_modules"] is None
    assert axolotl.expand({}, model)["target_modules"] == [] and axolotl._task_type(model) == "CAUSAL_LM"


@pytest.mark.parametrize("keys, message", [
    ({"lora_target_linear": True}, "lora_target_linear: false only"),
    ({"lora_target_parameters": ["w"], "lora_dropout": 0.05}, "lora_dropout != 0"),
])
def test_axolotl_replay_refuses_what_it_does_not_cover(keys, message):
    with pytest.raises(ExportError, match=message):
        axolotl.expand(keys, shared("suffix_trap"))


@pytest.mark.parametrize("cls_name, task", [("FooForSequenceClassification", "SEQ_CLS"),
                                            ("FooForTokenClassification", "TOKEN_CLS"), ("FooForCausalLM", "CAUSAL_LM")])
def test_axolotl_task_type_from_the_class_name(cls_name, task):
    assert axolotl._task_type(type(cls_name, (torch.nn.Module,), {})()) == task


def test_llamafactory_replay_all_and_substring_expansion():
    model = shared("llava")
    names = [n for n, _ in model.named_modules()]
    allk = llamafactory.expand({"lora_target": "all"}, model)["target_modules"]
    assert allk == [n for n in names if "language_model" in n and n.rsplit(".", 1)[-1].endswith("proj")]
    q = llamafactory.expand({"lora_target": " q_proj "}, model)["target_modules"]
    assert q == [n for n in names if n.endswith("q_proj") and "vision_tower" not in n]  # tower frozen by default
    plain = llamafactory.expand({"lora_target": "q_proj,v_proj", "additional_target": "lm_head"}, shared("demo"))
    assert (plain["target_modules"], plain["modules_to_save"], plain["r"], plain["lora_alpha"]) == (
        ["q_proj", "v_proj"], ["lm_head"], 8, 16)  # lora_alpha defaults to twice lora_rank


def test_llamafactory_replay_refuses_llama_pro():
    with pytest.raises(ExportError, match="without use_llama_pro"):
        llamafactory.expand({"lora_target": "q_proj", "use_llama_pro": True}, shared("llava"))


def test_swift_replay():
    model = shared("suffix_trap")
    assert swift.expand({"target_regex": "^a$", "target_modules": ["b"]}, model)["target_modules"] == "^a$"
    mamba = types.SimpleNamespace(config=types.SimpleNamespace(model_type="mamba"))
    assert swift.expand({"target_modules": ["in_proj", "out_proj", "conv1d"]}, mamba)["target_modules"] == ["in_proj"]
    assert swift.expand({"target_modules": ["fc"], "task_type": "seq_cls"}, model)["task_type"] == "SEQ_CLS"
    with pytest.raises(ExportError, match="does not expand all-linear"):
        swift.expand({}, model)


@pytest.mark.parametrize("keys, message", [
    ({"target_modules": None}, "get_peft_regex"), ({"target_modules": "all-linear"}, "get_peft_regex"),
    ({"target_modules": "^q$"}, "pass a list"),
    ({"target_modules": ["q_proj"], "finetune_vision_layers": False}, "finetune_\\* flag False"),
    ({"target_modules": ["q_proj"], "finetune_audio_layers": True}, "finetune_audio_layers True"),
])
def test_unsloth_replay_refuses_what_goes_through_unsloth_zoo(keys, message):
    with pytest.raises(ExportError, match=message):
        unsloth.expand(keys, shared("qwen3_moe"))


def test_unsloth_replay_classic_path_and_moe_additions():
    moe = shared("qwen3_moe")
    classic = unsloth.expand_classic({"target_modules": ["q_proj", "embed_tokens", "down_proj"]}, moe)
    assert classic["target_modules"] == ["q_proj", "down_proj"] and classic["modules_to_save"] == ["embed_tokens"]
    assert classic["target_parameters"] == ["mlp.experts.down_proj"]  # the automatic expert parameters
    assert unsloth.expand({"target_modules": ["q_proj"], "target_parameters": []}, moe)["target_parameters"] == []
    experts = unsloth.expand({"target_modules": ["q_proj", "down_proj"]}, shared("per_expert_moe"))
    assert experts["target_modules"] == ["q_proj", "down_proj", "down_projs.0", "down_projs.1"]
    assert unsloth.expand({"target_modules": ["gate_proj"]}, shared("per_expert_moe"))["target_modules"] == [
        "gate_proj", "gate_up_projs.0", "gate_up_projs.1"]
    assert not unsloth._is_moe(shared("demo"))
    with pytest.raises(ExportError, match="only 'lm_head' and 'embed_tokens'"):
        unsloth.expand_classic({"target_modules": ["q_proj"], "modules_to_save": ["norm"]}, moe)


@pytest.mark.parametrize("keys", [
    {"lora_target_modules": ["q_proj"]}, {"lora_target_modules": ["q_proj", "v_proj"]},
    {"lora_target_modules": None}, {"lora_target_modules": [], "lora_target_parameters": ["gate_up_proj"]},
    {"lora_target_modules": ["^a$"], "lora_modules_to_save": ["lm_head"], "lora_task_type": "SEQ_CLS"},
])
def test_trl_replay_equals_trls_own_functions(keys):
    import trl

    real = trl.get_peft_config(trl.ModelConfig(use_peft=True, **keys))
    replay = LoraConfig(**trl_export.expand(keys, None))
    for field in ("target_modules", "target_parameters", "modules_to_save", "task_type", "bias"):
        assert getattr(replay, field) == getattr(real, field), field


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("trainer, message", [
    ("axolotol", r"unknown trainer 'axolotol'.*did you mean `axolotl`"),
    ("Unsloth ", None), (3, r"unknown trainer 3: targetsel exports to axolotl, llamafactory"),
    ("deepspeed", r"unknown trainer 'deepspeed'"),
])
def test_trainer_names(trainer, message):
    sel = select(shared("suffix_trap"), "glob:block.attn.q_proj")
    if message is None:
        assert export(sel, trainer) == export(sel, "unsloth")
        return
    with pytest.raises(ExportError, match=message):
        export(sel, trainer)


def _bad_calls():
    trap, moe = shared("suffix_trap"), shared("qwen3_moe")
    psel = select(moe, "glob:**.mlp.experts").parameters()
    return [
        (lambda: export("q_proj", "peft"), "needs a targetsel Selection"),
        (lambda: export(psel, "peft", parameters=psel), "two parameter selections"),
        (lambda: export(select(moe, "glob:**.q_proj"), "peft", parameters="gate_up_proj"), "takes a ParameterSelection"),
        (lambda: export(None, "peft"), "needs a Selection, a ParameterSelection, or both"),
        (lambda: export(select(trap, "glob:block.out"), "peft", parameters=psel), "two different models"),
        (lambda: export(psel, "peft", ranks={"glob:**.q_proj": 8}), "pass the module Selection too"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_bad_arguments(index):
    call, message = _bad_calls()[index]
    with pytest.raises(ExportError, match=message):
        call()


def test_malformed_ranks_are_patchs_config_error():
    from targetsel import ConfigError

    with pytest.raises(ConfigError, match="maps sub-selections"):
        export(select(shared("suffix_trap"), "glob:block.attn.q_proj"), "peft", ranks=[16])


def test_empty_selection_is_patchs_preflight_error():
    from targetsel import EmptySelectionError

    with pytest.raises(EmptySelectionError):
        export(select(shared("suffix_trap"), "glob:block.attn & glob:block.out"), "axolotl")


@pytest.mark.parametrize("expansion, message", [
    (lambda keys, model: {"target_modules": ["q_proj"], "no_such_field": 1}, "LoraConfig rejects what peft builds"),
    (lambda keys, model: {"target_modules": ["nothing_here"]}, "get_peft_model would raise NoMatchingPeftModuleError"),
    (lambda keys, model: {"target_modules": ["q_proj"], "modules_to_save": ["block.out"]}, "would be trained in full"),
    (lambda keys, model: {"target_modules": ["q_proj"]}, "1 unselected module(s) would get one (attn.q_proj)"),
    (lambda keys, model: {"target_modules": ["out"]}, "1 selected module(s) would get no adapter (block.attn.q_proj)"),
])
def test_the_judge_says_what_goes_wrong(expansion, message):
    request = build_request("peft", select(shared("suffix_trap"), "glob:block.attn.q_proj"), None, None, None)
    assert message in judge(request, {}, [expansion])
    assert judge(request, {}, [lambda keys, model: {"target_modules": ["block.attn.q_proj"]}]) is None


def test_the_judge_names_trainable_token_layers():
    request = build_request("peft", select(shared("embed_tokens"), "glob:**.q_proj"), None, None, None)
    expansion = lambda keys, model: {"target_modules": ["q_proj"], "trainable_token_indices": {"embed_tokens": [0]}}  # noqa: E731
    assert "model.embed_tokens would get trainable-token layers" in judge(request, {}, [expansion])


def test_a_replay_refusal_reaches_the_judge():
    request = build_request("axolotl", select(shared("suffix_trap"), "glob:block.attn.q_proj"), None, None, None)
    assert "lora_target_linear: false only" in judge(request, {"lora_target_linear": True}, axolotl.EXPANSIONS)


def test_errors_are_targetsel_errors():
    assert issubclass(ExportError, TargetselError) and issubclass(ExportError, ValueError)
