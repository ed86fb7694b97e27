"""Reliability: regex safety, no mutation of what we are given, determinism."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import warnings

import pytest
import torch
from peft import IA3Config, LoraConfig
from torch import nn

import models
import targetsel as ts
from targetsel.model.index import forget
from targetsel import check, check_lock, patch, select, verify

# ---------------------------------------------------------------------------- regex safety


def _long_names_model(n_modules=50):
    with torch.device("meta"):
        m = nn.Module()
        for i in range(n_modules):
            m.add_module("a" * 40 + f"b{i}", nn.Linear(2, 2))
    return m


# (regex, catastrophic for the `regex` engine?) — (a|aa)+$ backtracks exponentially; (a+)+$ does
# not in the `regex` package (it would in `re`), and must simply finish.
REGEXES = [(r"(a|aa)+$", True), (r"(a|aa)+c", True), (r"(a+)+$", False), (r"(a*)*b", False)]


@pytest.mark.parametrize("pattern, catastrophic", REGEXES)
@pytest.mark.parametrize("how", ["fluent", "query"])
def test_regexes_end_well_under_two_seconds(pattern, catastrophic, how):
    model = _long_names_model()
    start = time.monotonic()
    try:
        if how == "fluent":
            select(model).name(pattern).names()
        else:
            select(model, f"name:/{pattern}/").names()
    except ts.RegexTimeoutError as exc:
        assert catastrophic, f"a harmless regex was stopped: {exc}"
        assert f"/{pattern}/" in str(exc) and "catastrophic backtracking" in str(exc)
        assert isinstance(exc, ts.TargetselError)
    else:
        assert not catastrophic, "a catastrophic regex ran to the end"
    # The 1 s regex budget is what stops it; this bound only catches a hang (timings never fail tests).
    assert time.monotonic() - start < 60.0


def test_catastrophic_parameter_regex_is_stopped_too():
    model = _long_names_model()
    with pytest.raises(ts.RegexTimeoutError, match=r"\(a\|aa\)\+\$"):
        select(model).parameters(r"(a|aa)+$").names()


# ---------------------------------------------------------------------------- no mutation


def snapshot(model: nn.Module) -> dict:
    """Everything a call could change: tree, parameter identities, grad flags, training modes."""
    return {
        "modules": [(n, id(m), type(m), m.training) for n, m in model.named_modules(remove_duplicate=False)],
        "params": [(n, id(p), p.requires_grad, p.dtype, p.device.type) for n, p in model.named_parameters(remove_duplicate=False)],
        "buffers": [(n, id(b)) for n, b in model.named_buffers(remove_duplicate=False)],
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()],
    }


def config_state(config) -> dict:
    return copy.deepcopy(vars(config))


SAFE = "linear & trainable - type:PLoRA - under:(type:PLoRA)"


def _lock(m):
    return select(m, SAFE).lock()


# (id, call(model, config)) — every public function, succeeding and raising
CALLS = [
    ("select", lambda m, c: select(m, "linear & trainable").names()),
    ("fluent-terminals", lambda m, c: (lambda s: (s.names(), s.modules(), len(s), s.regex(), s.to_peft("auto"), s.is_empty()))(select(m).linear().trainable().layers("-2.."))),
    ("display", lambda m, c: (repr(select(m, "linear")), select(m, "linear")._repr_html_())),
    ("patch", lambda m, c: patch(c, select(m, SAFE))),
    ("patch-ranks", lambda m, c: patch(c, select(m, SAFE), ranks={"glob:**.mlp.*": 4}, alphas={"layers:0": 2})),
    ("patch-parameters", lambda m, c: patch(c, select(m, "glob:multi_modal_projector.*").parameters("weight"))),
    ("patch-raises-nested", lambda m, c: patch(c, select(m, "linear"))),
    ("patch-raises-empty", lambda m, c: patch(c, select(m, "linear & glob:nothing.*"))),
    ("patch-raises-unsupported", lambda m, c: patch(c, select(m, "type:LayerNorm"))),
    ("patch-raises-config-field", lambda m, c: patch(c, select(m, SAFE)), {"exclude_modules": ["gate_proj"]}),
    ("patch-raises-modules-to-save", lambda m, c: patch(c, select(m, SAFE)), {"modules_to_save": ["linear_1"]}),
    ("verify", lambda m, c: verify(m, LoraConfig(target_modules=["q_proj", "v_proj"]))),
    ("verify-all-linear", lambda m, c: verify(m, LoraConfig(target_modules="all-linear"))),
    ("check-selection", lambda m, c: check(m, select(m, "linear"))),
    ("check-config", lambda m, c: check(m, LoraConfig(target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]))),
    ("check-query", lambda m, c: check(m, "type:LayerNorm | linear")),
    ("check-ia3", lambda m, c: check(m, select(m, SAFE), config=IA3Config(feedforward_modules=[]))),
    ("explain", lambda m, c: str(select(m, "linear & trainable").explain("vision_tower.layers.0.mlp.fc1"))),
    ("lock-check_lock", lambda m, c: check_lock(m, _lock(m))),
    ("lora_params", lambda m, c: select(m, SAFE).lora_params(8)),
    ("bad-query", lambda m, c: select(m, "linear & trainabel")),
    ("bad-type", lambda m, c: select(m).type("Lineer")),
]


@pytest.mark.parametrize("case", CALLS, ids=[c[0] for c in CALLS])
def test_no_public_function_mutates_model_or_config(case):
    name, call, fields = (*case, {})[:3]
    model = models.demo()
    model.language_model.layers[0].train(False)  # a mixed training-mode tree, to notice any .train()
    config = LoraConfig(r=8, lora_alpha=16, **fields)
    before_model, before_config = snapshot(model), config_state(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call(model, config)
        except ts.TargetselError:
            pass
    assert snapshot(model) == before_model
    assert config_state(config) == before_config


# ---------------------------------------------------------------------------- determinism

DETERMINISM_SCRIPT = r"""
import json, warnings
warnings.simplefilter("ignore")
from targetsel import select, check
from targetsel.demo import build_demo_model
from targetsel.text.grouping import group_names
m = build_demo_model()
out = {}
for q in ["linear & trainable", "linear & trainable - type:PLoRA - under:(type:PLoRA)", "glob:**.{q,v}_proj | layers:-2..", "frozen & leaf"]:
    s = select(m, q)
    out[q] = {
        "names": s.names(),
        "forms": {f: (sorted(v) if isinstance(v, set) else v) for f in ("regex", "auto") for v in [s.to_peft(f)]},
        "groups": [g.pattern for g in group_names(s.names())],
        "text": repr(s),
        "findings": [(f.code, f.message, list(f.modules)) for f in check(m, s)],
    }
print(json.dumps(out, sort_keys=True))
"""


def test_same_bytes_across_processes_and_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        result = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], capture_output=True, text=True, env=env, timeout=180)
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert "language_model.layers" in next(iter(outputs))


def test_same_selector_same_answer_within_a_process():
    model = models.demo()
    first = [select(model, q).to_peft("auto") for q in ("linear & trainable & leaf", "glob:**.fc1")]
    again = [select(models.demo(), q).to_peft("auto") for q in ("linear & trainable & leaf", "glob:**.fc1")]
    assert first == again


# ---------------------------------------------------------------- torch's thread setting
# targetsel runs its own small-tensor work on one thread (benchmarks/), so it must hand the
# caller's setting back after every call, failed ones included, and to user callables meanwhile.
THREAD_CALLS = [
    ("query", lambda m: select(m, "linear & trainable & layers:-2..").names(), None),
    ("fresh-index", lambda m: (forget(m), select(m).glob("**.fc1").names()), None),
    ("display", lambda m: str(select(m, "linear")), None),
    ("failing-where", lambda m: select(m).where(lambda n, mod: 1 / 0).names(), ts.TargetselError),
    ("unknown-container", lambda m: select(m, "layers:0@nowhere").names(), ts.UnknownNameError),
    ("patch", lambda m: patch(LoraConfig(), select(m, "linear & trainable & leaf - under:(type:PLoRA)")), None),
]


@pytest.mark.parametrize("case", THREAD_CALLS, ids=[c[0] for c in THREAD_CALLS])
def test_torch_thread_count_is_restored(case):
    _, call, error = case
    model = models.demo()
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if error is None:
                call(model)
            else:
                with pytest.raises(error):
                    call(model)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_where_callables_run_with_the_callers_threads():
    model = models.demo()
    seen = set()
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        # a where() inside another where(): each runs with the caller's setting
        inner = lambda n, m: seen.add(torch.get_num_threads()) or True  # noqa: E731
        outer = lambda n, m: seen.add(torch.get_num_threads()) or bool(select(m).where(inner).names()) or True  # noqa: E731
        select(model).linear().where(outer).names()
        assert seen == {3} and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
