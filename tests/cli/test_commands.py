"""The `targetsel` command line, driven as a user drives it: a subprocess, real exit codes, real output.

Each behaviour runs once through a real `python -m targetsel` (a fresh process pays seconds for
torch on this machine); its variants and the bad-input tables run `cli.main()` in-process — the
same code after argv parsing — and compare with the library's own answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

import models
from cli_run import main
from targetsel import cli, select, verify

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "PYTHONHASHSEED": "0"}


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "targetsel", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def demo():
    """One demo model for the tests that only read it (selecting never changes a model)."""
    return models.demo()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A transformers config.json as a user has it next to (or instead of) the weights."""
    import transformers

    path = tmp_path_factory.mktemp("llama")
    config = transformers.LlamaConfig(
        num_hidden_layers=3, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128,
    )
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter_config(tmp_path_factory):
    from peft import LoraConfig

    path = tmp_path_factory.mktemp("adapter")
    LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]).save_pretrained(path)
    return path / "adapter_config.json"


def test_no_arguments_shows_the_demo_and_what_check_finds():
    result = run()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "linear & trainable" in out and "DemoVLM" in out
    assert "[nested-targets]" in out and "[subclass-target]" in out
    assert result.stderr == ""


def test_show_list_in_a_subprocess_is_the_library_answer(demo):
    query = "linear & trainable & !under:vision_tower"
    listed = run("show", "demo", query, "--format", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == select(demo, query).names()
    assert listed.stderr == ""


@pytest.mark.parametrize(
    "query",
    ["linear & trainable & !under:vision_tower", "glob:**.{q,v}_proj & frozen", "layers:-2.. & type:PLoRA"],
)
def test_show_list_and_regex_match_the_library(query, demo, capsys):
    expected = select(demo, query).names()
    code, out, err = main(["show", "demo", query, "--format", "list"], capsys)
    assert code == 0, err
    assert out.splitlines() == expected
    code, out, err = main(["show", "demo", query, "--format", "regex"], capsys)
    assert code == 0, err
    pattern = re.compile(out.strip())
    assert [n for n, _ in demo.named_modules() if n and pattern.fullmatch(n)] == expected


def test_show_json_is_stable_and_yaml_says_the_same(demo, capsys):
    query = "linear & trainable & leaf"
    first = run("show", "demo", query, "--format", "json", "--rank", "16")  # PYTHONHASHSEED=0
    code, second, err = main(["show", "demo", query, "--format", "json", "--rank", "16"], capsys)  # this process's seed
    assert first.returncode == 0 == code, first.stderr + err
    assert first.stdout == second  # byte for byte, across processes and hash seeds
    data = json.loads(first.stdout)
    sel = select(demo, query)
    assert data["query"] == sel.query and data["count"] == len(sel) and data["names"] == sel.names()
    assert sum(g["count"] for g in data["groups"]) == len(sel)
    assert data["lora_params"] == sel.lora_params(16) and data["rank"] == 16
    assert data["modules_in_model"] == len(list(demo.named_modules())) - 1
    assert set(data) == {"count", "groups", "lora_params", "model", "model_class", "modules_in_model", "names",
                         "query", "rank", "target_modules"}
    code, as_yaml, err = main(["show", "demo", query, "--format", "yaml", "--rank", "16"], capsys)
    assert code == 0 and yaml.safe_load(as_yaml) == data


def test_show_table_on_a_transformers_config_json(llama_dir, capsys):
    from targetsel.cli.loading import load_model

    result = run("show", str(llama_dir), "linear & layers:-1..")
    assert result.returncode == 0, result.stderr
    code, table, err = main(["show", str(llama_dir / "config.json"), "linear & layers:-1.."], capsys)
    assert code == 0, err
    assert table == result.stdout  # the directory or its config.json: the same model
    assert "linear & layers:-1.." in table and "LlamaForCausalLM" in table
    code, out, err = main(["show", str(llama_dir), "linear & layers:-1..", "--format", "list"], capsys)
    listed = out.splitlines()
    model = load_model(str(llama_dir))
    assert type(model).__name__ == "LlamaForCausalLM"  # the class `architectures` names, as users train it
    assert listed == select(model, "linear & layers:-1..").names()
    assert listed[0] == "model.layers.2.self_attn.q_proj"


def test_model_class_override(llama_dir, capsys):
    code, out, err = main(["show", str(llama_dir), "linear", "--format", "list", "--model-class", "LlamaModel"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == "layers.0.self_attn.q_proj"  # the base model has no `model.` prefix


def test_factory_model(demo, capsys):
    code, out, err = main(["show", "targetsel.demo:build_demo_model", "type:PLoRA", "--format", "list"], capsys)
    assert code == 0, err
    assert out.splitlines() == select(demo, "type:PLoRA").names()


def test_check_a_query_exits_1_on_errors_and_0_on_warnings(capsys):
    bad = run("check", "demo", "linear")
    assert bad.returncode == 1
    assert "error [nested-targets]" in bad.stdout and "warning [frozen-target]" in bad.stdout
    assert re.search(r"^1 error, \d+ warnings?, \d+ info$", bad.stdout, re.M)
    code, out, err = main(["check", "demo", "linear & trainable - type:PLoRA - under:(type:PLoRA)", "--format", "json"],
                          capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["errors"] == 0 and all(f["severity"] != "error" for f in data["findings"])


def test_check_a_peft_config_finds_the_frozen_tower(adapter_config, capsys):
    code, out, err = main(["check", "demo", str(adapter_config), "--format", "json"], capsys)
    data = json.loads(out)
    codes = [f["code"] for f in data["findings"]]
    assert "frozen-target" in codes
    frozen = next(f for f in data["findings"] if f["code"] == "frozen-target")
    assert all(m.startswith("vision_tower.") for m in frozen["modules"])
    assert code == (1 if data["errors"] else 0)


def test_patch_writes_a_config_peft_resolves_exactly(adapter_config, tmp_path, capsys):
    from peft import PeftConfig

    query = "linear & trainable - type:PLoRA - under:(type:PLoRA)"
    out = tmp_path / "patched"
    result = run("patch", str(adapter_config), "--model", "demo", "--query", query, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr
    config = PeftConfig.from_pretrained(str(out))
    assert (config.r, config.lora_alpha) == (8, 16)  # everything else is kept
    model = models.demo()
    assert verify(model, config) == select(model, query).names()
    code, to_stdout, err = main(["patch", str(adapter_config), "--model", "demo", "--query", query], capsys)
    assert code == 0, err
    written = json.loads(to_stdout)["target_modules"]
    assert (set(written) if isinstance(written, list) else written) == config.target_modules


def test_patch_refuses_a_selection_check_rejects(adapter_config, tmp_path):
    out = tmp_path / "never.json"
    result = run("patch", str(adapter_config), "--model", "demo", "--query", "linear", "-o", str(out))
    assert result.returncode == 1
    assert "error [nested-targets]" in result.stderr and "not written" in result.stderr
    assert not out.exists()


def test_bad_query_in_a_subprocess_shows_the_caret():
    result = run("show", "demo", "linear & trainabel")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[:3] == [
        "targetsel: error: unknown atom 'trainabel' at column 9",
        "    linear & trainabel",
        "             ^",
    ]
    assert "Traceback" not in result.stderr


def test_hub_id_offline_is_a_clear_message_not_a_traceback():
    result = run("show", "Qwen/Qwen2.5-0.5B")
    assert result.returncode == 2
    assert "Hugging Face hub" in result.stderr and "offline" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_has_examples_and_every_verb():
    result = run("--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "targetsel show demo" in result.stdout
    # the usage line lists every registered verb (it once listed only {show,check,patch})
    verbs = re.match(r"usage: targetsel \[-h\] \[--version\] \{(.*?)\} \.\.\.", result.stdout)[1].split(",")
    assert sorted(verbs) == ["check", "check-adapter", "export", "patch", "show"]
    for verb in verbs:
        assert re.search(rf"^    {re.escape(verb)}\s+\S", result.stdout, re.M), verb  # each with its one-line help


# (argv, exit code, stderr fragment) — in-process, every bad-input branch of the CLI and the loader
BAD_INPUT = [
    (["show", "demo", "type:Lineer"], 2, "did you mean `Linear`"),
    (["show", "demo", "glob:**.nothing", "--format", "regex"], 2, "is empty"),
    (["show", "./no/such/dir"], 2, "no such file or directory"),
    (["show", "nope.json"], 2, "no such file or directory"),
    (["show", "a b c"], 2, "cannot tell what MODEL 'a b c' is"),
    (["show", "os:getcwd"], 2, "returned str, not a torch.nn.Module"),
    (["show", "no_such_package_x:make"], 2, "cannot import 'no_such_package_x'"),
    (["show", "targetsel.demo:nothing_here"], 2, "has no attribute 'nothing_here'"),
    (["show", "demo", "--format", "xml"], 2, "invalid choice: 'xml'"),
    (["show", "demo", "--rank", "0"], 2, "expected a positive integer, got 0"),
    (["show", "demo", "--rank", "x"], 2, "expected a positive integer, got 'x'"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["check", "demo", "missing.json"], 2, "no adapter config at 'missing.json'"),
    (["patch", "cfg.json", "--model", "demo"], 2, "the following arguments are required: --query"),
]


@pytest.mark.parametrize("argv, code, message", BAD_INPUT, ids=[" ".join(a) for a, *_ in BAD_INPUT])
def test_bad_input_exits_2_with_a_message(argv, code, message, capsys):
    rc, _, err = main(argv, capsys)
    assert rc == code
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read"),
        (json.dumps({"r": 8}), "has no 'peft_type'"),
        (json.dumps({"peft_type": "NOPE"}), "unknown peft_type 'NOPE'"),
        (json.dumps({"peft_type": "LORA", "layers_pattern": "layers"}), "peft rejects this config"),
    ],
)
def test_bad_adapter_configs(tmp_path, capsys, content, message):
    path = tmp_path / "adapter_config.json"
    path.write_text(content)
    assert cli.main(["patch", str(path), "--model", "demo", "--query", "linear & leaf"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [("{oops", "cannot read"), (json.dumps({"hidden_size": 4}), "has no 'model_type'"),
     (json.dumps({"model_type": "no_such_arch"}), "transformers cannot build a config")],
)
def test_bad_model_configs(tmp_path, capsys, content, message):
    (tmp_path / "config.json").write_text(content)
    assert cli.main(["show", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_directory_without_config(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "holds no config.json" in capsys.readouterr().err


def test_unbuildable_model_class(llama_dir, capsys):
    assert cli.main(["show", str(llama_dir), "--model-class", "NoSuchModel"]) == 2
    assert "NoSuchModel: not found in transformers" in capsys.readouterr().err
