"""How fast the `targetsel` command line answers, measured as a user meets it: a fresh process each
time, wall-clock seconds and peak memory from `/usr/bin/time` (issue 14, "the CLI starts fast").

    python benchmarks/cli_timings.py            # the table alone
    python benchmarks/bench.py                  # the full benchmark; this table is its last section

Each command runs `repeat` times and the best run counts: on a shared machine a slower run measures
the neighbours. The commands run as `python -m targetsel` from this checkout (what the `targetsel`
script runs), offline (`HF_HUB_OFFLINE=1`) except the unreachable-hub row, which points
`HF_ENDPOINT` at a closed local port to see how fast an offline hub id fails without the variable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"

_BUILD_LLAMA = ("import sys, torch, transformers; config = transformers.AutoConfig.from_pretrained(sys.argv[1]); "
                "torch.device('meta').__enter__(); transformers.AutoModelForCausalLM.from_config(config)")

# (label, arguments to `python -m targetsel` — or ["-c", code] for a plain script —, target seconds or None,
# environment changes, the label of its floor row or None). A floor is what the same work costs without
# targetsel's own code: the interpreter, `import torch`, transformers building the same model.
COMMANDS = [
    ("`python -c pass` (the interpreter alone)", ["-c", "pass"], None, {}, None),
    ("`targetsel --version`", ["--version"], 0.3, {}, "`python -c pass` (the interpreter alone)"),
    ("`targetsel --help`", ["--help"], 0.3, {}, "`python -c pass` (the interpreter alone)"),
    ("`import targetsel` (no torch)", ["-c", "import sys, targetsel; print(int('torch' in sys.modules))"], None, {},
     "`python -c pass` (the interpreter alone)"),
    ("`python -c 'import torch'` (floor of any command that builds a model)", ["-c", "import torch"], None, {}, None),
    ('`targetsel show demo "linear"`', ["show", "demo", "linear"], 3.0, {},
     "`python -c 'import torch'` (floor of any command that builds a model)"),
    ("transformers builds LOCAL_LLAMA_CONFIG's model on meta, no targetsel (floor)", ["-c", _BUILD_LLAMA, "{llama}"], None, {}, None),
    ('`targetsel show LOCAL_LLAMA_CONFIG "linear"`', ["show", "{llama}", "linear"], 5.0, {},
     "transformers builds LOCAL_LLAMA_CONFIG's model on meta, no targetsel (floor)"),
    ("`targetsel show Org/Model` with the hub unreachable (no HF_HUB_OFFLINE)", ["show", "Org/Model"], None,
     {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"}, None),
]

#: Commands that must never import torch: checked with `python -X importtime` (one untimed run each).
NO_TORCH = ("--version", "--help")


def _llama_config(where: Path) -> Path:
    """A small Llama config.json, as a user has it next to (or instead of) the weights."""
    import transformers

    config = transformers.LlamaConfig(num_hidden_layers=4, hidden_size=64, intermediate_size=128,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(where)
    return where


def _env(changes: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _time_once(argv: list[str], env: dict, workdir: Path) -> tuple[float, int, int, str]:
    """(seconds, peak KiB, exit code, stdout) of one run under /usr/bin/time."""
    report = workdir / "time.txt"
    done = subprocess.run([TIME, "-f", "%e %M", "-o", str(report), *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    seconds, kib = report.read_text().split()[-2:]
    return float(seconds), int(kib), done.returncode, done.stdout


def _imports_torch(args: list[str], env: dict) -> bool:
    """Does `python -m targetsel ARGS` import torch? (`-X importtime` lists every module imported.)"""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "targetsel", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def measure(repeat: int = 3) -> list[dict]:
    """One row per command: best wall-clock seconds of `repeat` fresh processes, peak memory, exit code."""
    if not Path(TIME).exists():
        return [{"label": "(no /usr/bin/time on this machine: CLI timings skipped)", "seconds": None}]
    workdir = Path(tempfile.mkdtemp(prefix="targetsel-cli-timings-"))
    try:
        llama = _llama_config(workdir / "llama")
        argvs = []
        for label, args, target, changes, floor in COMMANDS:
            args = [a.format(llama=llama) for a in args]
            argvs.append([sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "targetsel", *args])
        # Rounds over all commands, best of each: load on the shared machine falls on every row and its floor alike.
        runs = [[] for _ in COMMANDS]
        for _ in range(repeat):
            for i, (command, argv) in enumerate(zip(COMMANDS, argvs)):
                runs[i].append(_time_once(argv, _env(command[3]), workdir))
        rows = []
        for (label, args, target, changes, floor), timings in zip(COMMANDS, runs):
            seconds, kib, code, stdout = min(timings)
            row = {"label": label, "seconds": seconds, "peak_MiB": kib / 1024, "exit": code, "target": target, "floor": floor}
            if label.startswith("`import targetsel`"):
                row["imports_torch"] = stdout.strip() == "1"
            elif args[0] in NO_TORCH:
                row["imports_torch"] = _imports_torch(args, _env(changes))
            rows.append(row)
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def table(rows: list[dict]) -> str:
    seconds = {r["label"]: r["seconds"] for r in rows}
    lines = ["CLI start-up — fresh process each, best of 3 interleaved rounds, wall clock and peak memory from "
             "`/usr/bin/time`. *Above its floor*: the seconds beyond what the same work costs without targetsel's "
             "own code (the interpreter, `import torch`, transformers building the same model), the part targetsel controls:",
             "", "| command | target | seconds | above its floor | peak MiB | exit |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["seconds"] is None:
            lines.append(f"| {r['label']} | | | | | |")
            continue
        target = f"≤ {r['target']:g} s" if r.get("target") else "–"
        verdict = (" ✓" if r["seconds"] <= r["target"] else " ✗") if r.get("target") else ""
        label = r["label"] + (f" — imports torch: {'yes ✗' if r['imports_torch'] else 'no ✓'}" if "imports_torch" in r else "")
        floor = seconds.get(r.get("floor"))
        above = f"{r['seconds'] - floor:+.2f}" if floor is not None else "–"
        lines.append(f"| {label} | {target} | {r['seconds']:.2f}{verdict} | {above} | {r['peak_MiB']:.0f} | {r['exit']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(measure()))
