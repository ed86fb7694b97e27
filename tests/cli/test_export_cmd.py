"""`targetsel export MODEL QUERY --to TRAINER`, driven as a user drives it: a real subprocess for the
paths users take, `cli.main()` in-process for the table of bad inputs (same code after argv parsing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

import models
from cli_run import main
import trainer_models as tm
from targetsel import cli, select
from targetsel.bridge.exports import export

TESTS = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "PYTHONHASHSEED": "0",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(TESTS).parent), TESTS, os.environ.get("PYTHONPATH")]))}
DEMO_QUERY = "linear & trainable - type:PLoRA - under:(type:PLoRA)"


def run(*args):
    return subprocess.run([sys.executable, "-m", "targetsel", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def library(model, query, trainer, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export(select(model, query), trainer, **kw)


def test_yaml_export_in_a_subprocess_is_the_library_answer():
    result = run("export", "demo", DEMO_QUERY, "--to", "llamafactory")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# targetsel export --to llamafactory: ")
    assert "# exact under LLaMA-Factory 0.9.5 (commit ff6d4d12eeb0)" in result.stdout
    assert yaml.safe_load(result.stdout) == library(models.demo(), DEMO_QUERY, "llamafactory")
    assert "Traceback" not in result.stderr


def test_a_refusal_exits_1_and_writes_nothing(capsys):
    assert cli.main(["export", "models:suffix_trap", "glob:attn.q_proj", "--to", "unsloth"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unsloth cannot adapt exactly" in captured.err and "Closest exact alternative" in captured.err


def test_json_export_with_parameters(capsys):
    assert cli.main(["export", "trainer_models:qwen3_moe", "glob:**.self_attn.{q,v}_proj", "--parameters",
                     "glob:**.mlp.experts", "--parameter-pattern", "gate_up_proj$", "--to", "swift", "--format", "json"]) == 0
    model = tm.qwen3_moe()
    expected = library(model, "glob:**.self_attn.{q,v}_proj", "swift",
                       parameters=select(model, "glob:**.mlp.experts").parameters("gate_up_proj$"))
    assert json.loads(capsys.readouterr().out) == expected and expected["target_parameters"] == ["gate_up_proj"]


@pytest.mark.parametrize("argv, code, message", [
    (["export", "demo", "linear", "--to", "axolotol"], 2, "did you mean `axolotl`?"),
    (["export", "demo", "--to", "peft"], 2, "needs a QUERY (the modules to adapt), --parameters QUERY, or both"),
    (["export", "demo", "linear", "--to", "peft", "--parameter-pattern", "w"], 2, "pass that too"),
    (["export", "demo", "linear", "--to", "peft", "--rank", "linear"], 2, "--rank takes QUERY=R"),
    (["export", "demo", "linear", "--to", "peft", "--alpha", "linear=x"], 2, "--alpha takes QUERY=A"),
    (["export", "demo", "linear", "--to", "peft"], 1, "nothing was exported: fix the errors above"),
    (["export", "demo", "linear &", "--to", "peft"], 2, "at column"),
    (["export", "demo", "linear"], 2, "the following arguments are required: --to/-t"),
])
def test_bad_input(argv, code, message, capsys):
    rc, _, err = main(argv, capsys)
    assert rc == code
    assert message in err and "Traceback" not in err


def test_ranks_alphas_and_parameters_only_in_process(capsys):
    assert cli.main(["export", "trainer_models:qwen3_moe", "glob:**.self_attn.{q,v}_proj", "--to", "peft",
                     "--rank", "glob:**.q_proj=16", "--alpha", "glob:**.v_proj=8.5", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["rank_pattern"].values()) == [16] and list(data["alpha_pattern"].values()) == [8.5]
    assert cli.main(["export", "trainer_models:qwen3_moe", "--parameters", "glob:**.mlp.experts", "--to", "trl",
                     "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"use_peft": True, "lora_target_modules": [], "lora_target_parameters": ["gate_up_proj", "down_proj"],
                    "lora_dropout": 0.0}
