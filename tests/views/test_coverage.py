"""Coverage lint: dead entries, uneven coverage over layers, block types and components, the strip.

Real transformers models built from their config classes on the meta device: Llama (uniform), a
Gemma4 text model whose full-attention layers share k and v (no `v_proj`), Jamba and Bamba (hybrid
Mamba/attention), DeepSeek-V3 (MLA attention: no q/k/v_proj), Mixtral (PEFT's MoE conversion), and
the demo VLM. Dead config entries are judged by a real get_peft_model (targetsel.verify(real=True)).
"""

from __future__ import annotations

import functools
import warnings
from html.parser import HTMLParser

import pytest
import torch
import transformers
from peft import IA3Config, LoraConfig
from torch import nn

import targetsel as ts
from targetsel import check, select
from targetsel.bridge.config_entries import DeadEntry, dead_entries
from targetsel.demo import build_demo_model
from targetsel.text.alternatives import alternatives
from targetsel.views.coverage import LayerStrip, block_kind, coverage, layer_strips, strip_cells, strip_lines
from targetsel.views.display import HTML_STATE_COLOUR, render_html, render_text

SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)


def _causal_lm(model_type: str, **kw) -> nn.Module:
    config = transformers.AutoConfig.for_model(model_type, **{**SMALL, **kw})
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


@functools.lru_cache(maxsize=None)
def model(name: str) -> nn.Module:
    """Shared read-only models (nothing here freezes or injects into them)."""
    if name == "demo":
        return build_demo_model()
    return {
        "llama": lambda: _causal_lm("llama", num_hidden_layers=4),
        "gemma4": lambda: _causal_lm("gemma4_text", num_hidden_layers=6, head_dim=16, global_head_dim=16,
                                     attention_k_eq_v=True, layer_types=["sliding_attention"] * 2 + ["full_attention"]
                                     + ["sliding_attention"] * 2 + ["full_attention"]),
        "jamba": lambda: _causal_lm("jamba", num_hidden_layers=8, mamba_d_state=4, mamba_expand=2, num_experts=4),
        "bamba": lambda: _causal_lm("bamba", num_hidden_layers=4, attn_layer_indices=[2], mamba_n_heads=4,
                                    mamba_d_head=32, mamba_d_state=8, mamba_n_groups=1),
        "deepseek_v3": lambda: _causal_lm("deepseek_v3", num_hidden_layers=3, n_routed_experts=4, moe_intermediate_size=32,
                                          first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
                                          qk_nope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1, num_experts_per_tok=2),
        "mixtral": lambda: _causal_lm("mixtral", num_hidden_layers=2, num_local_experts=4),
        # a model type PEFT's Mamba guard names: LoRA on its mixers' out_proj raises in get_peft_model
        "nemotron_h": lambda: _causal_lm("nemotron_h", num_hidden_layers=4, mamba_num_heads=8, mamba_head_dim=8,
                                         ssm_state_size=16, n_groups=1),
    }[name]()


def codes(findings, *wanted):
    return [f for f in findings if f.code in wanted]


def only(findings, code):
    hits = codes(findings, code)
    assert len(hits) == 1, [str(f) for f in findings]
    return hits[0]


# ---------------------------------------------------------------------------- regex alternatives


@pytest.mark.parametrize("pattern, texts, regexes", [
    (r".*\.(q_proj|v_proj)", ["q_proj", "v_proj"], [r".*\.(q_proj)", r".*\.(v_proj)"]),
    (r".*\.(?:q|k)_proj", ["q", "k"], [r".*\.(?:q)_proj", r".*\.(?:k)_proj"]),
    (r"(?P<leaf>.*q_proj|.*v_proj)", [".*q_proj", ".*v_proj"], [r"(?P<leaf>.*q_proj)", r"(?P<leaf>.*v_proj)"]),
    (r".*q_proj|.*v_proj", [".*q_proj", ".*v_proj"], [r"(?:.*q_proj)", r"(?:.*v_proj)"]),
    (r"(a|b)\.(c|d)", ["a", "b", "c", "d"], [r"(a)\.(c|d)", r"(b)\.(c|d)", r"(a|b)\.(c)", r"(a|b)\.(d)"]),
    (r".*[|(]x\|(a|b)", ["a", "b"], [r".*[|(]x\|(a)", r".*[|(]x\|(b)"]),  # | and ( inside a class or escaped
    (r"[]|](a|b)", ["a", "b"], [r"[]|](a)", r"[]|](b)"]),  # a class opening with ] holds it
    (r"[^]|](a|b)", ["a", "b"], [r"[^]|](a)", r"[^]|](b)"]),
])
def test_alternatives_that_can_be_judged_alone(pattern, texts, regexes):
    found = alternatives(pattern)
    assert [a.text for a in found] == texts and [a.regex for a in found] == regexes


@pytest.mark.parametrize("pattern", [
    r".*\.q_proj",  # no alternation
    r"(a|b)+",  # repeated: `ab` matches through both alternatives at once
    r"((a|b)\.c)",  # nested: the inner group sits in another
    r"(x(a|b))",  # a group holding a group
    r"(a|b)\1",  # a backreference ties the parts together
    r"(?=a)(a|b)",  # a lookaround
    r"(?i)(a|b)",  # an inline flag
    r"(a|b",  # unbalanced: re.compile decides
    r"a|b)",
    r"(?P<x(a|b)",  # a named group that never closes its name
])
def test_no_alternatives_where_substitution_is_not_exact(pattern):
    assert alternatives(pattern) == []


# ---------------------------------------------------------------------------- dead config entries


DEAD_CONFIGS = [
    ("llama", dict(target_modules=["q_proj", "v_projj"]), [DeadEntry("target_modules", "v_projj")]),
    ("llama", dict(target_modules=["q_proj", "v_proj"]), []),
    ("llama", dict(target_modules=["self_attn.q_proj", "layers.0.mlp.up_proj"]), []),  # dotted suffixes match
    ("llama", dict(target_modules=["attn.q_proj"]), [DeadEntry("target_modules", "attn.q_proj")]),  # not at a dot
    ("llama", dict(target_modules=r".*\.nothing"), [DeadEntry("target_modules", r".*\.nothing")]),
    ("llama", dict(target_modules=r".*\.(q_proj|v_projj)"),
     [DeadEntry("target_modules", "v_projj", part_of=r".*\.(q_proj|v_projj)")]),
    ("llama", dict(target_modules=r".*q_proj|.*lm_haed"), [DeadEntry("target_modules", ".*lm_haed", part_of=r".*q_proj|.*lm_haed")]),
    ("llama", dict(target_modules="all-linear"), []),  # PEFT's keyword, not a regex
    ("llama", dict(target_modules=["q_proj"], exclude_modules=["layers.0.self_attn.q_proj", "nope"]),
     [DeadEntry("exclude_modules", "nope")]),
    ("llama", dict(target_modules=r".*_proj", exclude_modules=r".*\.nope"), [DeadEntry("exclude_modules", r".*\.nope")]),
    # modules_to_save: a plain endswith, so "_tokens" wraps embed_tokens and is not dead
    ("llama", dict(target_modules=["q_proj"], modules_to_save=["_tokens", "scorer"]), [DeadEntry("modules_to_save", "scorer")]),
    ("deepseek_v3", dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
     [DeadEntry("target_modules", e) for e in ("q_proj", "k_proj", "v_proj")]),  # MLA attention names them otherwise
    # PEFT's MoE conversion rewrites w1/w2/w3 into fused-expert parameters: not judged as written
    ("mixtral", dict(target_modules=["w1", "w2", "w3", "q_proj"]), []),
    # a conversion that raises leaves the names as written (peft-rejects reports the error)
    ("mixtral", dict(target_modules=["w1", "w2", "q_proj"]), [DeadEntry("target_modules", e) for e in ("w1", "w2")]),
    ("llama", dict(target_modules=r"(unclosed"), []),  # PEFT raises on it: peft-rejects says so
]


@pytest.mark.parametrize("name, fields, dead", DEAD_CONFIGS, ids=[f"{c[0]}-{c[1]}" for c in DEAD_CONFIGS])
def test_dead_config_entries(name, fields, dead):
    if isinstance(fields["target_modules"], list):  # PEFT keeps a list as a set: its entries come sorted
        dead = sorted(dead, key=lambda d: (d.field != "target_modules", d.entry))
    assert dead_entries(model(name), LoraConfig(**fields)) == dead


@pytest.mark.parametrize("name, entry, dead", [
    ("llama", "v_projj", True), ("llama", "v_proj", False), ("llama", "attn.q_proj", True),
    ("llama", "self_attn.q_proj", False), ("deepseek_v3", "q_proj", True), ("deepseek_v3", "q_a_proj", False),
])
def test_peft_judges_a_list_entry(name, entry, dead):
    """What dead_entries says about an entry is what a real get_peft_model does with it alone."""
    assert (DeadEntry("target_modules", entry) in dead_entries(model(name), LoraConfig(target_modules=[entry]))) is dead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dead:
            with pytest.raises(Exception, match="not found in the base model|did not match any"):
                ts.verify(model(name), LoraConfig(target_modules=[entry]), real=True)
        else:
            assert ts.verify(model(name), LoraConfig(target_modules=[entry]), real=True)


@pytest.mark.parametrize("pattern", [r".*\.(q_proj|v_projj|o_proj)", r".*mlp\.(?:gate_proj|up_projj)"])
def test_peft_judges_each_alternative(pattern):
    """Each alternative's own regex adapts nothing under real PEFT exactly when it is reported dead."""
    reported = {d.entry for d in dead_entries(model("llama"), LoraConfig(target_modules=pattern))}
    for alt in alternatives(pattern):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                adapted = ts.verify(model("llama"), LoraConfig(target_modules=alt.regex), real=True)
            except Exception:
                adapted = []
        assert (alt.text in reported) is (not adapted), alt


@pytest.mark.parametrize("name, fields, message", [
    ("llama", dict(target_modules=["q_proj", "v_projj"]),
     "1 config entry matches no module of LlamaForCausalLM (58 modules): target_modules v_projj. PEFT matches a list "
     "entry by the full name or a dotted suffix, a string with re.fullmatch, and modules_to_save entries with a plain "
     "endswith; an entry that matches nothing is ignored silently, so what it was meant to do does not happen. Fix the "
     "names or remove the entries. Nearest misses — module names: v_proj"),
    ("llama", dict(target_modules=r".*\.(q_proj|v_projj)"),
     "1 config entry matches no module of LlamaForCausalLM (58 modules): target_modules alternative(s) 'v_projj' of "
     "'.*\\\\.(q_proj|v_projj)'."),
    ("llama", dict(target_modules=r".*\.nothing|.*\.q_proj", exclude_modules=["nope1", "nope2"], modules_to_save=["scorer"]),
     "4 config entries match no module of LlamaForCausalLM (58 modules): target_modules alternative(s) '.*\\\\.nothing' "
     "of '.*\\\\.nothing|.*\\\\.q_proj'; exclude_modules nope{1,2} (2); modules_to_save scorer."),
    ("llama", dict(target_modules=r".*\.q_proj", exclude_modules=r".*\.nope"),
     "1 config entry matches no module of LlamaForCausalLM (58 modules): exclude_modules regex '.*\\\\.nope'."),
])
def test_dead_entry_findings_for_configs(name, fields, message):
    finding = only(check(model(name), LoraConfig(**fields)), "dead-entry")
    assert finding.severity == "warning" and finding.message.startswith(message)


@pytest.mark.parametrize("fields, nearest", [
    (dict(target_modules=r".*\.q_proj", exclude_modules=r".*\.lm_haed"), "Nearest misses — module names: lm_head"),  # a regex's words
    (dict(target_modules=["q_proj", "mlp.gate_prj"]), "Nearest misses — module names: model.layers.3.mlp.gate_proj"),  # the entry itself
])
def test_dead_entries_name_their_nearest_misses(fields, nearest):
    assert nearest in only(check(model("llama"), LoraConfig(**fields)), "dead-entry").message


@pytest.mark.parametrize("query, message", [
    ("glob:**.q_proj | glob:**.v_projj",
     "1 part(s) of the query select no module of DemoVLM (177 modules): union operand(s) 'glob:**.v_projj'. They "
     "change nothing — a misspelt name, or a module this model does not have. Fix or drop them. Nearest misses — "
     "module names: v_proj"),
    ("linear - glob:**.lm_haed", "subtracted part(s) 'glob:**.lm_haed'."),
    ("linear & !glob:**.nope9", "negated part(s) 'glob:**.nope9'."),
    ("(glob:**.fc1 | glob:**.fc9) - glob:**.nope", "subtracted part(s) 'glob:**.nope'; union operand(s) 'glob:**.fc9'."),
])
def test_dead_parts_of_a_query(query, message):
    finding = only(check(model("demo"), select(model("demo"), query)), "dead-entry")
    assert message in finding.message


def test_a_selection_with_a_method_config_lints_the_fields_patch_keeps():
    """For a selection, config= brings exclude_modules/modules_to_save; its target_modules are replaced."""
    sel = select(model("demo"), "linear & trainable - type:PLoRA - under:(type:PLoRA)")
    findings = codes(check(model("demo"), sel, config=LoraConfig(target_modules=["nope"], modules_to_save=["scorer"])), "dead-entry")
    assert [f.message.split(":")[1].split(".")[0].strip() for f in findings] == ["modules_to_save scorer"]
    both = codes(check(model("demo"), select(model("demo"), "glob:**.fc1 | glob:**.fc9"),
                       config=LoraConfig(modules_to_save=["scorer"])), "dead-entry")
    assert len(both) == 2 and "union operand" in both[0].message and "modules_to_save scorer" in both[1].message


@pytest.mark.parametrize("name, target", [
    ("llama", "linear"), ("llama", LoraConfig(target_modules="all-linear")),
    ("llama", LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    ("demo", "linear & trainable"), ("demo", "glob:**.q_proj | glob:**.v_proj"), ("demo", "linear - glob:**.lm_head"),
    ("jamba", "linear"), ("bamba", "linear"), ("deepseek_v3", "linear"),
])
def test_no_false_alarms_on_plain_selections(name, target):
    assert codes(check(model(name), target), "dead-entry", "uneven-coverage") == []


# ---------------------------------------------------------------------------- uneven coverage


UNEVEN = [
    ("jamba", LoraConfig(target_modules=["q_proj", "v_proj"]),
     "model.layers (8 layers): only 1 of 8 layers get adapters (layers 4); the other 7 hold mlp, mamba blocks whose 37 "
     "module(s) of the selected classes get none: model.layers.{0..3,5..7}.mamba.{in,x,dt,out}_proj (28), "
     "model.layers.{0,2,6}.feed_forward.{gate,up,down}_proj (9). By component (selected / modules of the selected "
     "classes): language 2/44, head 0/1. If that is what you meant, nothing is wrong; otherwise name the other blocks' "
     "layers too, or build the targets with targetsel.bridge.patch(config, select(model, ...))."),
    ("bamba", "glob:**.{q,k,v,o}_proj",
     "model.layers (4 layers): only 1 of 4 layers get adapters (layers 2); the other 3 hold mlp, mamba blocks"),
    ("bamba", "glob:**.{q,k,v,o}_proj", "otherwise select by class and place (e.g. linear & under:model.layers) instead of by name."),
    ("gemma4", "linear",
     "model.layers (6 layers): self_attn.v_proj adapted in 4 of 6 covered layers; layers 2,5 have no v_proj (their "
     "attention block lacks it). By component (selected / modules of the selected classes): language 53/53, head 0/1. "
     "The model has no such module there: nothing to add, but expect fewer adapters in those layers."),
    ("gemma4", LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), "layers 2,5 have no v_proj"),
    ("llama", "linear - glob:model.layers.2.self_attn.{k,v}_proj",
     "model.layers (4 layers): self_attn.{k,v}_proj (2) adapted in 3 of 4 covered layers; in layers 2 it is there and "
     "not selected."),
    ("llama", "linear & glob:model.layers.{0,1}.**", "only 2 of 4 layers get adapters (layers 0,1); the other 2 hold attention, mlp blocks"),
    ("demo", "linear & glob:*.layers.{0,1}.**", "vision_tower.layers (4 layers): only 2 of 4 layers"),
]


@pytest.mark.parametrize("name, target, message", UNEVEN, ids=[f"{c[0]}-{c[1] if isinstance(c[1], str) else sorted(c[1].target_modules)}" for c in UNEVEN])  # a set's repr varies by process
def test_uneven_coverage_is_flagged(name, target, message):
    finding = only(check(model(name), target), "uneven-coverage")
    assert finding.severity == "info" and message in finding.message


MAMBA_GUARD = [
    # (target, in the message, out_proj counted among the modules left bare)
    ("linear & glob:**.{q,k,v,o}_proj", "Not counted: out_proj, which PEFT refuses on 'nemotron_h' models (its Mamba guard raises).", False),
    (LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), "Not counted: out_proj, which PEFT refuses", False),
    ("linear & glob:**.{q,k,v,o}_proj", "(e.g. linear & under:model.layers - glob:**.out_proj)", False),
    # the guard is for LoRA-like methods only: IA3 adapts out_proj there, so it is counted
    (IA3Config(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], feedforward_modules=[]),
     "model.layers.0.mixer.{in,out}_proj (2)", True),
]


@pytest.mark.parametrize("target, message, counted", MAMBA_GUARD, ids=["selection", "config", "advice", "ia3"])
def test_uneven_coverage_leaves_out_what_peft_refuses(target, message, counted):
    finding = only(check(model("nemotron_h"), target), "uneven-coverage")
    assert message in finding.message
    assert any(n.endswith(".out_proj") for n in finding.modules) is counted
    assert "model.layers.0.mixer.in_proj" in finding.modules  # the mamba block's other projection is still counted


def test_the_advice_around_peft_s_mamba_guard_is_accepted_by_peft():
    from peft import get_peft_model

    fresh = _causal_lm("nemotron_h", num_hidden_layers=4, mamba_num_heads=8, mamba_head_dim=8, ssm_state_size=16, n_groups=1)
    advised = select(fresh, "linear & under:model.layers - glob:**.out_proj")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(fresh, ts.patch(LoraConfig(r=2), advised), low_cpu_mem_usage=True)
    assert ts.audit(peft_model, advised).ok
    assert codes(check(model("nemotron_h"), "linear & under:model.layers - glob:**.out_proj"), "uneven-coverage") == []


def test_uneven_coverage_names_the_uncovered_modules():
    finding = only(check(model("jamba"), LoraConfig(target_modules=["q_proj", "v_proj"])), "uneven-coverage")
    assert len(finding.modules) == 37 and "model.layers.0.mamba.in_proj" in finding.modules
    assert not any(".4." in n for n in finding.modules)


@pytest.mark.parametrize("name, target", [
    ("llama", "linear & layers:0..1"),  # layers restricted on purpose
    ("jamba", LoraConfig(target_modules=["q_proj", "v_proj"], layers_to_transform=[4], layers_pattern="layers")),
    ("demo", "linear & trainable & layers:-2.."),
])
def test_layers_restricted_on_purpose_are_not_flagged(name, target):
    assert codes(check(model(name), target), "uneven-coverage") == []


def test_too_many_role_groups_are_counted():
    """Five role groups with different missing layers: four are spelt out, the rest counted."""
    query = "linear - (glob:model.layers.0.self_attn.q_proj | glob:model.layers.1.self_attn.k_proj | " \
            "glob:model.layers.2.self_attn.v_proj | glob:model.layers.3.self_attn.o_proj | glob:model.layers.{0,1}.mlp.up_proj)"
    finding = only(check(model("llama"), query), "uneven-coverage")
    assert finding.message.count("it is there and not selected") == 4 and "and 1 more role group(s)" in finding.message


# ---------------------------------------------------------------------------- coverage values


@pytest.mark.parametrize("class_name, attribute, children, kind", [
    ("LlamaAttention", "self_attn", (), "attention"), ("Qwen3NextGatedDeltaNet", "linear_attn", (), "attention"),
    ("LlamaMLP", "mlp", (), "mlp"), ("JambaMambaMixer", "mamba", (), "mamba"), ("Module", "ssm", (), "mamba"),
    ("JambaSparseMoeBlock", "feed_forward", (), "moe"), ("Block", "ffn", ("experts", "gate"), "moe"),
    ("GPTJMLP", "mlp", (), "mlp"), ("DeepseekV32SparseAttention", "self_attn", (), "attention"), ("Module", "feed_forward", (), "mlp"), ("LlamaRMSNorm", "input_layernorm", (), "other"),
])
def test_block_kinds(class_name, attribute, children, kind):
    assert block_kind(class_name, attribute, children) == kind


def test_coverage_counts_per_layer_block_type_and_component():
    m = model("jamba")
    res = select(m, "glob:**.{q,v}_proj").resolution()
    (stack,) = coverage(res.index, res.mask).stacks
    assert (stack.container, stack.layers, stack.covered) == ("model.layers", 8, (4,))
    assert stack.adapted["attention"] == [0, 0, 0, 0, 2, 0, 0, 0]
    assert stack.candidates["attention"] == [0, 0, 0, 0, 4, 0, 0, 0]  # q, k, v, o: Linears like the selection
    assert stack.candidates["mamba"] == [4, 4, 4, 4, 0, 4, 4, 4] and stack.candidates["mlp"][:3] == [3, 0, 3]
    assert stack.kinds_in([0, 1]) == ["mlp", "mamba"]
    cov = coverage(res.index, res.mask)
    assert cov.components == {"language": (2, 44), "head": (0, 1)}
    demo = select(model("demo"), "linear & trainable").resolution()
    assert coverage(demo.index, demo.mask).components == {
        "vision": (0, 24), "language": (90, 90), "projector": (2, 2), "head": (0, 1)}


def test_numbered_children_that_are_layers_only_make_a_stack():
    with torch.device("meta"):
        m = nn.Module()
        m.proj = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4))  # leaves: not a stack of blocks
        # numbered 2 then 0: the layers are ordered by number (ordinals 0, 1), whatever the registration order
        m.blocks = nn.ModuleDict({"2": nn.Sequential(nn.Linear(4, 4)), "0": nn.Sequential(nn.Linear(4, 4))})
    res = select(m, "glob:blocks.2.*").resolution()
    assert layer_strips(res.index, res.mask) == [LayerStrip("blocks", 2, (1,))]
    (stack,) = coverage(res.index, res.mask).stacks
    assert stack.covered == (1,) and stack.uncovered_candidates == (res.index.position("blocks.0.0"),)


# ---------------------------------------------------------------------------- the strip


@pytest.mark.parametrize("strip, text", [
    (LayerStrip("model.layers", 4, (0, 1, 2, 3)), "▮▮▮▮ 4/4"),
    (LayerStrip("model.layers", 8, (4,)), "▯▯▯▯▮▯▯▯ 1/8 (4)"),
    (LayerStrip("model.layers", 6, (0, 1, 3)), "▮▮▯▮▯▯ 3/6 (0,1,3)"),
    (LayerStrip("model.layers", 4, ()), "▯▯▯▯ 0/4"),
    (LayerStrip("model.layers", 80, tuple(range(28))), "0..27 of 0..79 (28/80)"),
    (LayerStrip("model.layers", 80, tuple(range(80))), "0..79 of 0..79 (80/80)"),
    (LayerStrip("model.layers", 80, ()), "none of 0..79 (0/80)"),
])
def test_strip_cells(strip, text):
    assert strip_cells(strip) == text


@pytest.mark.parametrize("strips, lines", [
    ([], []),
    ([LayerStrip("a", 2, ()), LayerStrip("b", 2, ())], ["layers: a ▯▯ 0/2"]),  # none covered: the first stack
    ([LayerStrip("a", 2, ()), LayerStrip("b", 2, (1,))], ["layers: b ▯▮ 1/2 (1)"]),
    ([LayerStrip(x, 2, (0,)) for x in "abcd"],
     ["layers: a ▮▯ 1/2 (0)", "layers: b ▮▯ 1/2 (0) · 2 more stack(s) with adapters"]),
])
def test_strip_lines(strips, lines):
    assert strip_lines(strips) == lines


@pytest.mark.parametrize("name, query, line", [
    ("llama", "linear", "  layers: model.layers ▮▮▮▮ 4/4"),
    ("jamba", "glob:**.{q,v}_proj", "  layers: model.layers ▯▯▯▯▮▯▯▯ 1/8 (4)"),
    ("demo", "linear & trainable", "  layers: language_model.layers ▮▮▮▮▮▮ 6/6"),
    ("demo", "glob:multi_modal_projector.*", "  layers: vision_tower.layers ▯▯▯▯ 0/4"),
])
def test_text_display_shows_the_strip_before_the_totals(name, query, line):
    lines = render_text(select(model(name), query).resolution()).splitlines()
    assert lines[-2] == line and " modules · " in lines[-1]


def test_two_stacks_two_lines_and_no_strip_without_layers():
    lines = render_text(select(model("demo"), "linear & layers:0").resolution()).splitlines()
    assert lines[-3:-1] == ["  layers: vision_tower.layers ▮▯▯▯ 1/4 (0)", "  layers: language_model.layers ▮▯▯▯▯▯ 1/6 (0)"]
    with torch.device("meta"):
        flat = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert "layers:" not in render_text(select(flat, "linear").resolution())
    assert "layers:" not in render_html(select(flat, "linear").resolution())


def test_a_forty_thousand_module_selection_still_fits_in_fourteen_lines():
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleList()
        for _ in range(48):
            block = nn.Module()
            block.experts = nn.ModuleList(nn.Sequential(*[nn.Linear(8, 8) for _ in range(8)]) for _ in range(100))
            m.layers.append(block)
    text = render_text(select(m, "all").resolution())
    assert len(list(m.modules())) > 40_000 and len(text.splitlines()) <= 14
    assert "  layers: layers " + "▮" * 48 + " 48/48" in text.splitlines()


class _Cells(HTMLParser):
    """Every <td>/<th> with its style and text, and the table's parts in order."""

    def __init__(self):
        super().__init__()
        self.cells, self.parts, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._open = {"tag": tag, "style": dict(attrs).get("style", ""), "text": ""}
            self.cells.append(self._open)
        elif tag in ("thead", "tbody", "tfoot"):
            self.parts.append(tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data


def _parse(html_text: str) -> _Cells:
    parser = _Cells()
    parser.feed(html_text)
    return parser


def _grad_model() -> nn.Module:
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.GELU()) for _ in range(3))
    m.layers[1][0].requires_grad_(False)  # frozen
    m.layers[2][0].weight.requires_grad_(False)  # mixed: bias still trains
    return m


@pytest.mark.parametrize("query, state", [
    ("glob:layers.0.0", "trainable"), ("glob:layers.1.0", "frozen"), ("glob:layers.2.0", "mixed"), ("glob:layers.0.2", "—"),
])
def test_html_colours_the_grad_state_and_right_aligns_the_numbers(query, state):
    cells = _parse(render_html(select(_grad_model(), query).resolution())).cells
    heads = [c for c in cells if c["tag"] == "th"]
    right = {c["text"] for c in heads if "text-align:right" in c["style"]}
    assert right == {"count", "parameters"}
    row = [c for c in cells if c["tag"] == "td"][:6]
    assert row[4] == {"tag": "td", "style": f"color:{HTML_STATE_COLOUR[state]}", "text": state}
    assert "text-align:right" in row[1]["style"] and row[1]["text"] == "1"
    assert "text-align:right" in row[5]["style"]
    assert len({HTML_STATE_COLOUR[s] for s in ("trainable", "frozen", "mixed", "—")}) == 4


def test_html_strip_sits_in_the_footer_with_covered_cells_coloured():
    parsed = _parse(render_html(select(model("jamba"), "glob:**.{q,v}_proj").resolution()))
    assert parsed.parts == ["thead", "tbody", "tfoot"]
    strip, totals = [c for c in parsed.cells if c["tag"] == "td"][-2:]
    assert strip["text"] == "layers: model.layers ▯▯▯▯▮▯▯▯ 1/8 (4)" and totals["text"].startswith("2 modules · ")
    html_text = render_html(select(model("jamba"), "glob:**.{q,v}_proj").resolution())
    assert f"▯▯▯▯<span style='color:{HTML_STATE_COLOUR['trainable']}'>▮</span>▯▯▯" in html_text
    many = render_html(select(model("demo"), "linear & layers:0").resolution())
    assert "<code>vision_tower.layers</code>" in many and "<code>language_model.layers</code>" in many


def test_html_strip_counts_the_stacks_it_leaves_out():
    with torch.device("meta"):
        m = nn.Module()
        for name in ("a", "b", "c"):
            m.add_module(name, nn.ModuleList(nn.Sequential(nn.Linear(2, 2)) for _ in range(2)))
    text = render_text(select(m, "linear").resolution())
    html_text = render_html(select(m, "linear").resolution())
    assert "· 1 more stack(s) with adapters" in text and "· 1 more stack(s) with adapters" in html_text


# ---------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv, shown", [
    (["check", "demo", "glob:**.q_proj | glob:**.v_projj"], "warning [dead-entry] 1 part(s) of the query select no module"),
    (["check", "demo", "linear & glob:*.layers.{0,1}.**"], "info [uneven-coverage] vision_tower.layers (4 layers): only 2 of 4"),
    (["show", "demo", "linear & layers:0"], "  layers: language_model.layers ▮▯▯▯▯▯ 1/6 (0)"),
])
def test_the_cli_shows_coverage(argv, shown, capsys):
    from targetsel import cli

    cli.main(argv)
    assert shown in capsys.readouterr().out
