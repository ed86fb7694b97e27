"""The command line on real workflows (issue 15, "A CLI that can express real workflows").

- `--freeze` / `--unfreeze` replay what the trainer freezes, so `check MODEL adapter_config.json`
  on a model built from config.json reports the frozen-tower incident;
- `show MODEL adapter_config.json` lists what a saved config adapts, grouped, with the findings;
- `--trust-remote-code`, and an unknown `architectures` entry is never built as another class;
- a missing path says so, and a hub id with the hub unreachable fails at once, in one line;
- `--format json` groups are the table's rows;
- every verb in the usage line, rich's spinner only on a terminal, and no bitsandbytes (nor its
  import-time log lines) unless the model is quantized with it.

The user-facing runs are real `python -m targetsel` subprocesses; the tables of bad input run
`cli.main()` in-process (the same code after argv parsing, without paying for a fresh torch import).
Timings are bounded generously here (a busy 2-core machine); the real figures are in
benchmarks/cli_timings.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

import models
from cli_run import main
from targetsel import select, verify
from targetsel.cli import commands as cli

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "PYTHONHASHSEED": "0"}


def run(*args, env=None, timeout=900, python=()):
    return subprocess.run([sys.executable, *python, "-m", "targetsel", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


def imported(stderr: str) -> set[str]:
    """The modules `python -X importtime` reports on stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def without_importtime(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    """A small LLaVA config.json: a CLIP tower whose q_proj/v_proj share names with the language model's."""
    import transformers

    path = tmp_path_factory.mktemp("llava")
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=32, patch_size=8)
    text = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=128)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_json(tmp_path_factory):
    """The dict of a small Llama config.json, to write variants of."""
    import transformers

    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=64)
    config.architectures = ["LlamaForCausalLM"]
    path = tmp_path_factory.mktemp("llama")
    config.save_pretrained(path)
    return json.loads((path / "config.json").read_text())


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from peft import LoraConfig

    path = tmp_path_factory.mktemp("adapter")
    LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def frozen_check(llava_dir, adapter_dir):
    """The headline workflow, once, in a real process: `check LLAVA adapter_config.json --freeze
    under:vision_tower`. Under FORCE_COLOR=1 (rich alone would then draw a spinner into the pipe)
    and `-X importtime`, so the same run shows what stderr carries and which modules were imported."""
    return run("check", str(llava_dir), str(adapter_dir / "adapter_config.json"), "--format", "json",
               "--freeze", "under:vision_tower", env={**ENV, "FORCE_COLOR": "1"}, python=("-X", "importtime"))


def write_config(tmp_path, data: dict, **files: str):
    (tmp_path / "config.json").write_text(json.dumps(data))
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


# ---------------------------------------------------------------------------- --freeze / --unfreeze


def test_check_reports_the_frozen_tower_only_once_the_tower_is_frozen(llava_dir, adapter_dir, frozen_check, capsys):
    """The headline case: a config-built LLaVA has nothing frozen, so PEFT's q_proj/v_proj reaching into
    the CLIP tower is invisible — until --freeze replays what the trainer freezes."""
    code, out, err = main(["check", str(llava_dir), str(adapter_dir), "--format", "json"], capsys)
    assert code == 0, err
    assert "frozen-target" not in [f["code"] for f in json.loads(out)["findings"]]

    assert frozen_check.returncode == 0, frozen_check.stderr
    finding = next(f for f in json.loads(frozen_check.stdout)["findings"] if f["code"] == "frozen-target")
    assert finding["severity"] == "warning"
    assert len(finding["modules"]) == 4  # 2 CLIP layers × {q,v}_proj, and no module of the language model
    assert all(m.startswith("model.vision_tower.") and m.endswith(("q_proj", "v_proj")) for m in finding["modules"])


def test_stderr_carries_only_what_targetsel_says(frozen_check):
    """No spinner frames into a pipe (even under FORCE_COLOR), no library noise such as bitsandbytes'
    "Failed to load CPU gemm_4bit_forward …": a model without quantized layers never imports it."""
    lines = without_importtime(frozen_check.stderr)
    assert len(lines) == 1, lines
    assert re.fullmatch(r"targetsel: --freeze 'under:vision_tower': \d+ module\(s\), (\d+) of \1 parameter tensors "
                        r"\(\S+ elements\) set requires_grad=False", lines[0])
    modules = imported(frozen_check.stderr)
    assert {"peft", "transformers"} <= modules  # peft judged the config: it was imported, bitsandbytes not
    # (peft's `import bitsandbytes` is still attempted and halted at once, so -X importtime lists the
    # name alone; a real import loads its package modules)
    assert not [m for m in modules if m.startswith("bitsandbytes.")]


@pytest.fixture(scope="module")
def bnb_4bit_dir(tmp_path_factory, llama_json):
    """A Llama config.json with a bitsandbytes 4-bit quantization_config: the model needs bitsandbytes."""
    pytest.importorskip("bitsandbytes")
    path = tmp_path_factory.mktemp("llama-4bit")
    quantization = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (path / "config.json").write_text(json.dumps({**llama_json, "quantization_config": quantization}))
    return path


def test_a_bitsandbytes_model_keeps_bitsandbytes_and_its_log_lines_stay_quiet(bnb_4bit_dir, adapter_dir):
    """The other side of keeping bitsandbytes out: a model quantized with it is built with its layers,
    peft sees them (its bnb dispatch: the quantized-base finding), and bitsandbytes' import-time log
    lines still never reach stderr."""
    result = run("check", str(bnb_4bit_dir), str(adapter_dir), "--format", "json", python=("-X", "importtime"))
    assert result.returncode == 0, result.stderr
    assert {"bitsandbytes.nn", "bitsandbytes.functional"} <= imported(result.stderr)
    finding = next(f for f in json.loads(result.stdout)["findings"] if f["code"] == "quantized-base")
    assert "Linear4bit ×4 → peft.tuners.lora.bnb.Linear4bit" in finding["message"]
    lines = without_importtime(result.stderr)
    assert [line.split(":")[0] for line in lines] == ["targetsel"], lines  # the one note: built as it loads
    assert "bitsandbytes 4-bit: built as that checkpoint loads" in lines[0]


def test_export_applies_freeze_before_selecting(llava_dir, capsys):
    """`export` selects on the model as frozen: `trainable` leaves the frozen tower out, and PEFT
    adapts exactly that with the exported keys."""
    from peft import LoraConfig

    from targetsel.cli.loading import load_model

    query = "linear & leaf & trainable"
    code, out, err = main(["export", str(llava_dir), query, "--to", "peft", "--format", "json",
                           "--freeze", "under:vision_tower"], capsys)
    assert code == 0, err
    assert err.startswith("targetsel: --freeze 'under:vision_tower': ")
    model = load_model(str(llava_dir))
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    expected = select(model, query).names()
    assert expected and not any(".vision_tower." in n for n in expected)
    assert verify(model, LoraConfig(target_modules=json.loads(out)["target_modules"])) == expected
    code, out, err = main(["export", str(llava_dir), query, "--to", "peft", "--format", "json"], capsys)
    assert code == 0, err  # without --freeze the tower is trainable, so selected too
    assert verify(model, LoraConfig(target_modules=json.loads(out)["target_modules"])) != expected


def _trainable_after(steps):
    """The demo's trainable modules after applying `steps` by hand, as a trainer script would."""
    model = models.demo()
    for action, query in steps:
        for module in select(model, query).modules().values():
            for p in module.parameters():
                p.requires_grad_(action == "unfreeze")
    return select(model, "trainable").names()


@pytest.mark.parametrize(
    "steps",
    [
        [("freeze", "all")],
        [("freeze", "all"), ("unfreeze", "component:language")],
        [("freeze", "component:language"), ("unfreeze", "under:vision_tower")],
        [("unfreeze", "under:vision_tower"), ("freeze", "glob:**.mlp.*")],
        [("freeze", "type:Embedding"), ("freeze", "layers:0..2"), ("unfreeze", "layers:1")],
    ],
    ids=lambda steps: " ".join(f"--{a} {q}" for a, q in steps),
)
def test_freeze_and_unfreeze_apply_in_command_line_order(steps, capsys):
    argv = ["show", "demo", "trainable", "--format", "list"]
    for action, query in steps:
        argv += [f"--{action}", query]
    code, out, err = main(argv, capsys)
    assert code == 0, err
    assert out.splitlines() == _trainable_after(steps)
    assert [re.match(r"targetsel: (--\w+ '.*?'): ", line)[1] for line in err.splitlines()] == [
        f"--{a} {q!r}" for a, q in steps]


def test_unfreezing_the_tower_clears_the_finding(capsys):
    code, out, err = main(["check", "demo", "linear & leaf & under:vision_tower", "--format", "json"], capsys)
    assert "frozen-target" in [f["code"] for f in json.loads(out)["findings"]]
    code, out, err = main(["check", "demo", "linear & leaf & under:vision_tower", "--format", "json",
                           "--unfreeze", "under:vision_tower"], capsys)
    assert code == 0, err
    assert "frozen-target" not in [f["code"] for f in json.loads(out)["findings"]]
    assert "--unfreeze 'under:vision_tower': 47 module(s), 68 of 68 parameter tensors" in err


def test_patch_sees_the_frozen_model(adapter_dir, capsys):
    """`patch` selects on the model as frozen: `trainable` then leaves the frozen part out."""
    code, out, err = main(["patch", str(adapter_dir), "--model", "demo", "--query", "linear & leaf & trainable",
                           "--freeze", "component:language"], capsys)
    assert code == 0, err
    from peft import LoraConfig

    config = LoraConfig(**{k: v for k, v in json.loads(out).items() if k in ("r", "lora_alpha", "target_modules")})
    model = models.demo()
    for p in select(model, "component:language").modules()["language_model"].parameters():
        p.requires_grad_(False)
    assert verify(model, config) == select(model, "linear & leaf & trainable").names()
    assert verify(model, config) == ["multi_modal_projector.linear_1", "multi_modal_projector.linear_2"]


# (argv after `show demo`, stderr fragment) — every error branch of --freeze / --unfreeze
FREEZE_ERRORS = [
    (["--freeze", "linear & trainabel"], "--freeze 'linear & trainabel': unknown atom 'trainabel' at column 9"),
    (["--unfreeze", "type:Lineer"], "--unfreeze 'type:Lineer': "),
    (["--freeze", "under:vision_towr"], "--freeze 'under:vision_towr': "),
    (["--freeze", "glob:**.nothing_here"], "--freeze 'glob:**.nothing_here' selects no module: "),
    (["--freeze", "type:GELU"], "and none of them holds a parameter: nothing to freeze"),
    (["--freeze"], "argument --freeze: expected one argument"),
]


@pytest.mark.parametrize("extra, message", FREEZE_ERRORS, ids=[" ".join(e) for e, _ in FREEZE_ERRORS])
def test_freeze_errors(extra, message, capsys):
    code, out, err = main(["show", "demo", "linear", "--format", "list", *extra], capsys)
    assert code == 2
    assert message in err and out == ""
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- show MODEL adapter_config.json


def test_show_an_adapter_config_lists_what_peft_adapts_with_the_findings(adapter_dir, capsys):
    table = run("show", "demo", str(adapter_dir))
    assert table.returncode == 0, table.stderr  # warnings only
    model = models.demo()
    from peft import PeftConfig

    adapted = verify(model, PeftConfig.from_pretrained(str(adapter_dir)))
    lines = table.stdout.splitlines()
    assert lines[0] == (f"{adapter_dir}: LoraConfig(target_modules=['q_proj', 'v_proj']) — get_peft_model adapts "
                        f"{len(adapted)} of 177 modules of DemoVLM")
    assert lines[1].split() == ["vision_tower.layers.{0..3}.self_attn.{q,v}_proj", "8", "×", "Linear(256→256)", "frozen",
                                "526K", "params"]
    assert lines[2].split()[:5] == ["language_model.layers.{0..5}.self_attn.{q,v}_proj", "12", "×", "PLoRA(512→512)",
                                    "trainable"]
    assert "warning [frozen-target] 8 of the 20 selected modules" in table.stdout
    assert "warning [subclass-target]" in table.stdout
    # the counts line (other checks may add findings: only these are pinned)
    assert re.fullmatch(r"0 errors, (\d+) warnings, \d+ info", lines[-1]) and int(lines[-1].split()[2]) >= 3

    code, out, err = main(["show", "demo", str(adapter_dir / "adapter_config.json"), "--format", "json", "--rank", "4"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["names"] == adapted and data["count"] == 20
    assert data["target_modules"] == ["q_proj", "v_proj"] and data["peft_type"] == "LORA"
    assert [g["count"] for g in data["groups"]] == [8, 12]
    codes = [f["code"] for f in data["findings"]]
    assert {"frozen-target", "subclass-target", "adapter-name-clash"} <= set(codes)
    assert data["errors"] == 0 and data["warnings"] == sum(f["severity"] == "warning" for f in data["findings"]) >= 3
    assert data["peft_error"] is None
    assert data["lora_params"] == select(model, "glob:**.self_attn.{q,v}_proj").lora_params(4)


@pytest.mark.parametrize(
    "config, code, expected",
    [
        # an error finding: exit 1, as `check`
        ({"peft_type": "LORA", "target_modules": ["nope_proj"]}, 1, "error [empty-selection]"),
        # PEFT's own rules: "all-linear" reaches into the PLoRA layers and crashes; modules_to_save wraps
        ({"peft_type": "LORA", "target_modules": "all-linear"}, 1,
         "  no module: get_peft_model raises AttributeError: Linear has no attribute `Plora_A`"),
        ({"peft_type": "LORA", "target_modules": ["fc1"], "modules_to_save": ["multi_modal_projector"]}, 0,
         "also modules_to_save (trained in full): ['multi_modal_projector']"),
        ({"peft_type": "LORA", "target_modules": r".*vision_tower.*\.fc1"}, 0, "4 × Linear(256→1024)"),
    ],
    ids=["targets nothing", "all-linear", "modules_to_save", "regex"],
)
def test_show_adapter_configs(tmp_path, capsys, config, code, expected):
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    got, out, err = main(["show", "demo", str(tmp_path)], capsys)
    assert got == code, err
    assert expected in out
    listed, out_list, err_list = main(["show", "demo", str(tmp_path), "--format", "list"], capsys)
    from peft import PeftConfig

    from targetsel import dry_run

    assert out_list.splitlines() == list(dry_run(models.demo(), PeftConfig.from_peft_type(**config)).modules)
    assert listed == code and (code == 0 or "error [" in err_list)


def test_show_adapter_regex_matches_exactly_what_peft_adapts(adapter_dir, capsys):
    code, out, err = main(["show", "demo", str(adapter_dir), "--format", "regex"], capsys)
    assert code == 0, err
    pattern = re.compile(out.strip())
    model = models.demo()
    from peft import PeftConfig

    expected = verify(model, PeftConfig.from_pretrained(str(adapter_dir)))
    assert [n for n, _ in model.named_modules() if n and pattern.fullmatch(n)] == expected
    assert err.startswith("warning [frozen-target]")  # what is wrong goes to stderr, the answer stays clean


@pytest.mark.parametrize(
    "target, message",
    [("missing.json", "no adapter config at 'missing.json'"), ("./no-such-adapter-dir/", "no adapter config at"),
     ("{tmp}", "no adapter config at '{tmp}/adapter_config.json'")],
)
def test_show_adapter_bad_paths(tmp_path, capsys, target, message):
    code, out, err = main(["show", "demo", target.format(tmp=tmp_path)], capsys)
    assert code == 2 and message.format(tmp=tmp_path) in err


def test_a_bare_word_naming_a_directory_stays_a_query(tmp_path, capsys, monkeypatch):
    (tmp_path / "linear").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = main(["show", "demo", "linear", "--format", "list"], capsys)
    assert code == 0 and out.splitlines() == select(models.demo(), "linear").names()


# ---------------------------------------------------------------------------- --format json groups


@pytest.mark.parametrize("query", ["linear", "all", "under:vision_tower", "linear & trainable & leaf"])
def test_json_groups_are_the_table_rows(query, capsys):
    code, out, err = main(["show", "demo", query, "--format", "json"], capsys)
    assert code == 0, err
    groups = json.loads(out)["groups"]
    code, table, err = main(["show", "demo", query], capsys)
    assert code == 0, err
    if len(groups) <= 10:  # the table shows every row (a longer one ends with "… N more groups")
        from targetsel.views.display import human

        rows = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()[1:len(groups) + 1]]
        assert rows == [[g["pattern"], f"{g['count']} × {g['class']}" + (f"({g['shape']})" if g["shape"] else ""),
                         g["grad_state"], f"{human(g['params'])} params"] for g in groups]
    model = models.demo()
    sel = select(model, query)
    from targetsel.views.display import shape_of

    assert sum(g["count"] for g in groups) == len(sel)
    for g in groups:
        assert set(g) == {"pattern", "count", "class", "shape", "grad_state", "params"}
        members = sel.glob(g["pattern"]).modules()
        assert len(members) >= g["count"]
        # no group merges modules of different class, shape or grad state
        same = [m for m in members.values() if type(m).__name__ == g["class"] and shape_of(m) == g["shape"]]
        assert len(same) >= g["count"] > 0
    # rows of different shapes stay apart: the mlp's up/gate (512→1536) and down (1536→512) projections
    if query == "linear":
        shapes = {g["pattern"]: g["shape"] for g in groups}
        assert shapes["language_model.layers.{0..5}.mlp.{gate,up}_proj"] == "512→1536"
        assert shapes["language_model.layers.{0..5}.mlp.down_proj"] == "1536→512"


def test_json_groups_never_merge_names_of_different_shapes(llava_dir, capsys):
    """Same leaf names, different shapes: the language model's q_proj (64→64) and v_proj (64→32, two KV
    heads) are two groups; the CLIP tower's q/v (32→32, frozen) are one, apart from both."""
    code, out, err = main(["show", str(llava_dir), "glob:**.self_attn.{q,v}_proj", "--format", "json",
                           "--freeze", "under:vision_tower"], capsys)
    assert code == 0, err
    rows = [(g["pattern"], g["count"], g["class"], g["shape"], g["grad_state"], g["params"]) for g in json.loads(out)["groups"]]
    assert rows == [
        ("model.vision_tower.encoder.layers.{0,1}.self_attn.{v,q}_proj", 4, "Linear", "32→32", "frozen", 4 * (32 * 32 + 32)),
        ("model.language_model.layers.{0,1}.self_attn.q_proj", 2, "Linear", "64→64", "trainable", 2 * 64 * 64),
        ("model.language_model.layers.{0,1}.self_attn.v_proj", 2, "Linear", "64→32", "trainable", 2 * 64 * 32),
    ]


# ---------------------------------------------------------------------------- classes and remote code

REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tinyremote"

    def __init__(self, hidden_size=16, num_hidden_layers=2, **kwargs):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)
'''

REMOTE_MODEL = '''
from torch import nn
from transformers import PreTrainedModel

from .configuration_tinyremote import TinyRemoteConfig


class PLoRA(nn.Linear):
    """InternLM-XComposer2's shape: a Linear subclass with its own low-rank children."""

    def __init__(self, d):
        super().__init__(d, d)
        self.Plora_A = nn.Linear(d, 2, bias=False)
        self.Plora_B = nn.Linear(2, d, bias=False)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.wqkv = PLoRA(d)
        self.w1 = nn.Linear(d, 2 * d)


class TinyRemoteForCausalLM(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.backbone = nn.ModuleDict({"blocks": nn.ModuleList(Block(config.hidden_size) for _ in range(config.num_hidden_layers))})
        self.output = nn.Linear(config.hidden_size, 8, bias=False)
'''

REMOTE_JSON = {
    "model_type": "tinyremote", "architectures": ["TinyRemoteForCausalLM"], "hidden_size": 16, "num_hidden_layers": 2,
    "auto_map": {"AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
                 "AutoModelForCausalLM": "modeling_tinyremote.TinyRemoteForCausalLM"},
}


def test_trust_remote_code_builds_the_models_own_class(tmp_path):
    (tmp_path / "model").mkdir()
    model_dir = write_config(tmp_path / "model", REMOTE_JSON, configuration_tinyremote=REMOTE_CONFIG,
                             modeling_tinyremote=REMOTE_MODEL)
    env = {**ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    refused = run("show", str(model_dir), "linear", env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "needs its own Python code (remote code: auto_map AutoConfig → configuration_tinyremote.TinyRemoteConfig" in refused.stderr
    assert "pass --trust-remote-code" in refused.stderr
    assert not (tmp_path / "modules").exists()  # nothing of the model's code was copied, let alone run

    built = run("show", str(model_dir), "linear & !under:(type:PLoRA)", "--format", "json", "--trust-remote-code", env=env)
    assert built.returncode == 0, built.stderr
    data = json.loads(built.stdout)
    assert data["model_class"] == "TinyRemoteForCausalLM"
    assert data["names"] == ["backbone.blocks.0.wqkv", "backbone.blocks.0.w1", "backbone.blocks.1.wqkv",
                             "backbone.blocks.1.w1", "output"]
    assert [g["class"] for g in data["groups"]] == ["PLoRA", "Linear", "Linear"]


def test_a_known_model_type_whose_class_is_remote_code(tmp_path, llama_json, capsys):
    """model_type llama (transformers has the config) but architectures names the model's own class:
    without the flag the error names the auto_map entry; with it, that class is built."""
    data = {**llama_json, "architectures": ["TinyRemoteForCausalLM"],
            "auto_map": {"AutoModelForCausalLM": "modeling_tinyremote.TinyRemoteForCausalLM"}}
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_config(model_dir, data, configuration_tinyremote=REMOTE_CONFIG, modeling_tinyremote=REMOTE_MODEL)
    env = {**ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    code, out, err = main(["show", str(model_dir)], capsys)  # in-process: without the flag no code runs
    assert code == 2 and out == ""
    assert "names architectures 'TinyRemoteForCausalLM', which transformers" in err
    assert "auto_map AutoModelForCausalLM → modeling_tinyremote.TinyRemoteForCausalLM): pass --trust-remote-code" in err
    built = run("show", str(model_dir), "type:PLoRA", "--format", "list", "--trust-remote-code", env=env)
    assert built.returncode == 0, built.stderr
    assert built.stdout.splitlines() == ["backbone.blocks.0.wqkv", "backbone.blocks.1.wqkv"]


def test_an_unknown_architecture_is_never_built_as_another_class(tmp_path, llama_json):
    """`FooBarForCausalLM` on a llama config was built as LlamaForCausalLM without a word."""
    write_config(tmp_path, {**llama_json, "architectures": ["FooBarForCausalLM"]})
    result = run("show", str(tmp_path), "linear", "--format", "list")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"targetsel: error: {tmp_path}/config.json names architectures 'FooBarForCausalLM', "
                                    "which transformers ")
    assert "does not build another class in its place" in result.stderr
    assert "pass --model-class LlamaForCausalLM to build one of them" in result.stderr  # what to do
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


# (config.json changes to a Llama config, extra argv, exit code, stdout first line or stderr fragment)
CLASSES = [
    # an unknown class is never replaced by another one
    ({"architectures": ["FooBarForCausalLM"]}, [], 2,
     "names architectures 'FooBarForCausalLM', which transformers"),
    ({"architectures": ["FooBarForCausalLM"]}, [], 2,
     "targetsel does not build another class in its place"),
    ({"architectures": ["FooBarForCausalLM"]}, [], 2,
     "The config has no auto_map entry for 'FooBarForCausalLM', so it is not remote code transformers can load. "
     "For model_type 'llama' transformers has LlamaForCausalLM, LlamaModel, "),
    ({"architectures": ["FooBarForCausalLM"]}, [], 2, "pass --model-class LlamaForCausalLM to build one of them"),
    # ... unless the user names the class
    ({"architectures": ["FooBarForCausalLM"]}, ["--model-class", "LlamaForCausalLM"], 0, "model.embed_tokens"),
    # a class that exists but cannot be built from this config: its error, no fallback
    ({"architectures": ["BertModel"]}, [], 2, "cannot build BertModel from "),
    ({"architectures": ["BertModel"]}, [], 2, "AttributeError: 'LlamaConfig' object has no attribute"),
    # no architectures: the causal-LM auto class, said on stderr
    ({"architectures": None}, [], 0, "model.embed_tokens"),
    ({"architectures": None}, [], 0, "names no `architectures`: built LlamaForCausalLM (AutoModelForCausalLM)"),
    ({"architectures": []}, ["--model-class", "LlamaModel"], 0, "embed_tokens"),
    ({"architectures": ["LlamaForCausalLM"]}, ["--model-class", "NoSuchModel"], 2, "NoSuchModel: not found in transformers"),
    ({"architectures": ["LlamaForCausalLM"]}, ["--model-class", "torch.nn:Linear"], 2, "cannot build torch.nn:Linear"),
    ({"architectures": ["LlamaForCausalLM"]}, ["--model-class", "no_such_pkg_x:Model"], 2, "no_such_pkg_x:Model: not found"),
    # a model type transformers registers no model class for: nothing to suggest but --model-class
    ({"model_type": "blip_text_model", "architectures": ["FooBarModel"]}, [], 2,
     "so it is not remote code transformers can load. Pass --model-class NAME"),
]


@pytest.mark.parametrize("changes, extra, code, expected", CLASSES,
                         ids=[f"{c['architectures']} {' '.join(e)} {m[:30]}" for c, e, _, m in CLASSES])
def test_which_class_is_built(tmp_path, llama_json, capsys, changes, extra, code, expected):
    data = {k: v for k, v in {**llama_json, **changes}.items() if v is not None}
    write_config(tmp_path, data)
    got, out, err = main(["show", str(tmp_path), "--format", "list", *extra], capsys)
    assert got == code, err
    if code == 0:
        assert expected in out.splitlines() or expected in err
    else:
        assert expected in err and out == ""


# ---------------------------------------------------------------------------- missing paths, offline hubs


@pytest.mark.parametrize("spec", ["./no-such-dir", "../no/such/dir", "/no/such/model", "no/such/deep/dir",
                                  "missing-config.json", "~/no-such-model-dir", "C:\\models\\llama"])
def test_a_missing_local_path_says_so(spec, capsys):
    code, out, err = main(["show", spec], capsys)
    assert code == 2
    assert f"no such file or directory: {spec!r}" in err
    assert "Repo id" not in err and "hub" not in err


@pytest.mark.parametrize("spec", ["a b c", "bad-", "org/na..me", "org/-name"])
def test_neither_a_path_nor_a_hub_id(spec, capsys):
    code, out, err = main(["show", spec], capsys)
    assert code == 2 and f"cannot tell what MODEL {spec!r} is" in err


# (MODEL, environment changes, stderr fragments) — the hub is unreachable each time
OFFLINE = [
    # HF_HUB_OFFLINE unset: one short request to a closed port, then one line (no retries, no traceback)
    ("Qwen/Qwen2.5-0.5B", {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"},
     ["the Hugging Face hub is not reachable from here (offline: ConnectError:", "not in the local cache",
      "no such file or directory 'Qwen/Qwen2.5-0.5B', and "]),
    ("gpt2", {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"},
     ["cannot fetch the config of 'gpt2': the Hugging Face hub is not reachable"]),
    ("Qwen/Qwen2.5-0.5B", {"HF_HUB_OFFLINE": "1"}, ["(offline: HF_HUB_OFFLINE is set)"]),
    # a missing path is told at once, whatever the network
    ("./models/qwen", {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"},
     ["no such file or directory: './models/qwen'"]),
]


@pytest.fixture(scope="module")
def import_baseline():
    """Seconds a fresh process takes to import what the failing command imports (the hub client, the CLI)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import huggingface_hub.file_download, targetsel.cli.commands"],
                   env=ENV, capture_output=True, timeout=900)
    return time.perf_counter() - start


@pytest.mark.parametrize("spec, changes, fragments", OFFLINE, ids=[f"{s} {sorted(c.items())[-1]}" for s, c, _ in OFFLINE])
def test_unreachable_hub_fails_at_once_in_one_line(tmp_path, spec, changes, fragments, import_baseline):
    env = {**ENV, "HF_HOME": str(tmp_path / "hf-home")}  # an empty cache
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    start = time.perf_counter()
    result = run("show", spec, env=env)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one line: no retry warnings, no traceback
    for fragment in fragments:
        assert fragment in result.stderr
    # About a second. The bound is generous and relative: what it catches is huggingface_hub's retry
    # loop (23 s of sleeps, which no machine load shortens), not a slow start on a busy machine; the
    # benchmark (benchmarks/cli_timings.py) reports the real figure.
    assert elapsed - import_baseline < 15, f"{elapsed:.1f} s (a process importing the same: {import_baseline:.1f} s)"


def _hub_env(tmp_path, **changes):
    env = {**ENV, "HF_HOME": str(tmp_path / "hf-home")}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key)
    return {**env, **changes}


@pytest.mark.parametrize("offline", [{"HF_ENDPOINT": "http://127.0.0.1:9"}, {"HF_HUB_OFFLINE": "1"}],
                         ids=["hub at a closed port", "HF_HUB_OFFLINE=1"])
def test_unreachable_hub_still_reads_a_cached_config(tmp_path, llama_json, offline):
    """The probe fails (or is not made), so the config comes from the local cache, as huggingface_hub
    lays it out — the cache is built here, no network needed."""
    repo = tmp_path / "hf-home" / "hub" / "models--Org--TinyLlama"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps(llama_json))
    result = run("show", "Org/TinyLlama", "glob:**.q_proj", "--format", "list", env=_hub_env(tmp_path, **offline))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]


def test_a_reachable_hub_without_the_repo_says_so_in_one_line(tmp_path):
    """The hub answers (a local server standing in for it, 404 for everything): no offline message,
    transformers' own reason, once."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run("show", "Org/NoSuchModel", env=_hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}"))
    finally:
        server.shutdown()
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("targetsel: error: no such file or directory 'Org/NoSuchModel', and transformers "
                                    "cannot build a config from 'Org/NoSuchModel': ")
    assert "not reachable" not in result.stderr


# ---------------------------------------------------------------------------- start-up


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from targetsel.cli import main\n"
        "for argv in (['--version'], ['--help'], ['show', '--help'], ['check', '--help'], ['patch', '--help'],\n"
        "             ['export', '--help'], ['check-adapter', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'rich', 'pydantic') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_export_verb_names_every_trainer_without_importing_them():
    from targetsel.bridge.exports import TRAINERS
    from targetsel.cli import export_cmd

    assert export_cmd.TRAINER_NAMES == TRAINERS


def test_help_documents_the_model_options():
    result = run("show", "--help")
    assert result.returncode == 0
    for option in ("--freeze QUERY", "--unfreeze QUERY", "--trust-remote-code", "--model-class CLASS", "QUERY_OR_CONFIG"):
        assert option in result.stdout


def test_the_spinner_is_richs_and_only_on_a_terminal(tmp_path, llava_dir):
    """stderr a terminal (a pseudo-terminal here): rich's status spinner names the step and is cleared
    afterwards; stderr a pipe: nothing (every other subprocess test here asserts on that stderr). The
    step names a model directory that reads as rich markup (`[bold]`): printed as it is, not as a style."""
    pty = pytest.importorskip("pty")
    model_dir = tmp_path / "run[bold]"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((llava_dir / "config.json").read_text())
    import threading

    master, slave = pty.openpty()
    chunks = []

    def drain():  # the terminal's side, read while the child runs: a full pty would block its writes
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        env = {**ENV, "TERM": "xterm", "COLUMNS": "400"}  # wide enough for the step on one line
        proc = subprocess.Popen([sys.executable, "-m", "targetsel", "show", str(model_dir), "type:CLIPAttention",
                                 "--format", "list"], stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=600) == 0
        reader.join(timeout=60)
    finally:
        os.close(master)
    err = b"".join(chunks).decode("utf-8", "replace")
    assert out.splitlines() == [f"model.vision_tower.encoder.layers.{i}.self_attn" for i in (0, 1)]  # untouched
    assert f"building {model_dir}…" in err
    # rich hides the cursor while it spins and shows it again after each step; the last line is erased
    assert err.count("\x1b[?25l") == err.count("\x1b[?25h") >= 1 and err.endswith("\x1b[2K")


def test_a_closed_stdout_ends_quietly_with_0(monkeypatch, capsys):
    """`targetsel show … | head`: the reader went away; no traceback, exit 0."""

    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stdout", Closed())
    assert cli.main(["show", "demo", "linear", "--format", "list"]) == 0
    assert capsys.readouterr().err == ""
