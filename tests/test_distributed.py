"""FSDP2, FSDP1 and activation checkpointing under real torch.distributed: two gloo ranks on CPU.

One run per module (tests/distributed_worker.py, spawned once, bounded by TIMEOUT so a hang in a
collective fails instead of blocking) shards a tiny Llama (LlamaConfig, real CPU weights) and the
demo VLM with `fully_shard` and `FullyShardedDataParallel` (use_orig_params True and False, with
checkpoint wrappers) and records what targetsel answers on each rank; the tests below read both
ranks' records. Each rank holds only its shard, so a shape, count or grad state read from the
local tensor would differ between ranks and from the unsharded model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distributed_worker import QUERIES, WORLD, WRAPPINGS

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
# Generous: the run takes ~30 s of CPU time in all; the bound only turns a hang into a failure.
TIMEOUT = float(os.environ.get("TARGETSEL_DISTRIBUTED_TIMEOUT", "420"))

SHARDED = WRAPPINGS[1:]
CASES = [(kind, how, query) for kind, queries in QUERIES.items() for how in WRAPPINGS for query in queries]
SHARDED_CASES = [c for c in CASES if c[1] != "plain"]
SAME_AS_PLAIN = ("names", "rows", "text", "lora_params", "lock", "findings", "patch_error")
# the queries patch() compiles (the others select norms or whole blocks, which LoRA cannot wrap: refused alike)
PATCHED = [c for c in CASES if c[2] in (*QUERIES["llama"][:3], *QUERIES["demo"][:2])]


def _key(kind, how, query) -> str:
    return f"{kind}|{how}|{query}"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and the ranks it spawned: its own session
        proc.communicate()
        pytest.fail(f"the {WORLD}-rank run did not finish within {TIMEOUT:.0f} s (a hang in a collective?)")
    errors = "\n".join(p.read_text() for p in sorted(out.glob("rank*.error")))
    assert proc.returncode == 0 and not errors, f"exit {proc.returncode}\n{errors or output[-4000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_the_ranks_ran_in_one_process_group(ranks):
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, WORLD), (1, WORLD)]
    assert len(ranks[0]["facts"]) == len(CASES)


@pytest.mark.parametrize("kind,how,query", CASES)
def test_every_answer_is_identical_on_both_ranks(ranks, kind, how, query):
    key = _key(kind, how, query)
    assert ranks[0]["facts"][key] == ranks[1]["facts"][key]


@pytest.mark.parametrize("kind,how,query", SHARDED_CASES)
@pytest.mark.parametrize("field", SAME_AS_PLAIN)
def test_a_sharded_model_answers_as_the_unsharded_one(ranks, kind, how, query, field):
    # names and the grouped display (user's classes, global shapes, counts, grad states), lora_params,
    # the lock (hash and model class), the findings and patch()'s refusals
    got, plain = ranks[0]["facts"][_key(kind, how, query)], ranks[0]["facts"][_key(kind, "plain", query)]
    assert got.get(field) == plain.get(field)


@pytest.mark.parametrize("kind,how,query", PATCHED)
def test_the_patched_config_adapts_the_selection_on_the_sharded_and_the_plain_model(ranks, kind, how, query):
    got = ranks[0]["facts"][_key(kind, how, query)]
    assert got["names"] and got["verify_here"] == got["names"] and got["verify_plain"] == got["names"]


@pytest.mark.parametrize("kind,how,query", [c for c in PATCHED if c[1] != "plain"])
def test_fsdp2_keeps_the_plain_config_fsdp1_needs_its_own_names(ranks, kind, how, query):
    got, plain = ranks[0]["facts"][_key(kind, how, query)], ranks[0]["facts"][_key(kind, "plain", query)]
    if how == "fsdp2" or not isinstance(plain["target_modules"], str):
        # names unchanged (FSDP2), or a suffix list whose entries stay inside one FSDP unit
        assert got["target_modules"] == plain["target_modules"] and got["plain_config_here"] == got["names"]
    else:  # the plain model's regex misses every module under an FSDP1 unit; the sharded model's config does not
        assert got["plain_config_here"] != got["names"] and "_fsdp_wrapped_module" in got["target_modules"]


@pytest.mark.parametrize("kind,query", [(k, q) for k, qs in QUERIES.items() for q in qs if (k, "plain", q) not in PATCHED])
def test_what_patch_refuses_it_refuses_on_every_model(ranks, kind, query):
    errors = {ranks[r]["facts"][_key(kind, how, query)].get("patch_error") for r in range(WORLD) for how in WRAPPINGS}
    assert len(errors) == 1 and errors.pop().split(":")[0] in ("PreflightError", "NestedTargetsError")


@pytest.mark.parametrize("kind,how", [(k, h) for k in QUERIES for h in SHARDED])
def test_get_peft_model_then_sharding_adapts_the_selection_on_every_rank(ranks, kind, how):
    selected = ranks[0]["facts"][_key(kind, "plain", QUERIES[kind][0])]["names"]
    for r in ranks:
        flow = r["peft"][f"{kind}|{how}"]
        assert flow["audit_ok"] and flow["wrapped"] == selected
        # the README's flow: config and lock made once on the meta model, adapters checked after sharding
        assert flow["meta_flow_audit_ok"] and flow["meta_lock_is_the_sharded_lock"]
        if how == "fsdp2":  # get_peft_model straight on the sharded model (DTensor base weights)
            assert flow["direct_audit_ok"]
        if kind == "llama":  # a real step: every LoRA weight got a gradient through the sharded model
            assert flow["lora_grads"] == 2 * len(selected)


@pytest.mark.parametrize("kind,how", [(k, h) for k in QUERIES for h in SHARDED])
def test_the_callback_prints_its_table_on_rank_0_only(ranks, kind, how):
    first, second = (r["peft"][f"{kind}|{how}"]["callback_printed"] for r in ranks)
    assert first.startswith("targetsel: adapters at train start on PeftModel\n") and "audit ok" in first
    assert second == ""


@pytest.mark.parametrize("what,rank0,rank1", [
    ("show", lambda v: v.startswith("Selection('glob:vision_tower.layers.1.self_attn.*') — 4 of 75 modules of DemoVLM"),
     lambda v: v == ""),
    ("warnings", lambda v: any(w.startswith("[frozen-target] 4 of the 4 selected modules") for w in v),
     lambda v: v == []),
    # a warnings filter set to "error" raises on every rank, so no rank is left waiting in a collective
    ("error_filter", lambda v: v.startswith("TargetselWarning: ["), lambda v: v.startswith("TargetselWarning: [")),
])
def test_what_targetsel_shows_is_shown_once(ranks, what, rank0, rank1):
    assert rank0(ranks[0]["printing"][what]) and rank1(ranks[1]["printing"][what])
