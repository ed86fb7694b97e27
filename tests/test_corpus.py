"""Real transformers architectures × a table of queries, judged by PEFT itself.

For every architecture in `corpus.ARCHS` and every query in `corpus.QUERIES` (plus `linear &
trainable` after freezing a tower), every compiled form of a non-empty selection — `to_peft(form)`
for list / suffixes / regex / auto, and `patch(LoraConfig(), sel)` — is handed to a real
`get_peft_model` on a fresh model (tests/oracle.py). Each comes out

  exact    PEFT adapted exactly `sel.names()` and no parameter;
  refused  targetsel raised a TargetselError subclass whose message says why;
  wrong    PEFT adapted something else, or raised on the config targetsel handed out (or
           targetsel failed without a reason).

`wrong` must be 0. The `to_peft` forms are judged on *matching*: module types LoRA has no layer for
(norms, activations, whole blocks) get the oracle's stand-in layer (`wrap_any=True`), so PEFT's whole
injection path still runs and shows what it matched. `patch()` promises more — a config PEFT
accepts — so its config is injected as is.

The default run judges a broad subset (`DEFAULT_CASES`: every architecture with every form, on
three of the ten queries); `-m slow` runs the rest of the product. `python tests/corpus_table.py`
runs all of it and prints the README summary.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import re
import warnings

import pytest
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists

import corpus
import oracle
import targetsel as ts
from targetsel import select
from targetsel.views.targets import list_matches

FORMS = ("list", "suffixes", "regex", "auto")
JUDGED = (*FORMS, "patch")
VERDICTS = ("exact", "refused", "wrong")


@dataclasses.dataclass(frozen=True)
class Outcome:
    model_type: str
    query: str
    frozen: bool
    form: str
    verdict: str                   # exact / refused / wrong
    value: object = None           # what targetsel handed out (target_modules, or the patched fields)
    detail: str = ""               # the refusal message, or what PEFT did instead
    lost: tuple = ()               # wrong: selected modules PEFT did not adapt
    extra: tuple = ()              # wrong: unselected modules PEFT adapted
    parameters: tuple = ()         # wrong: parameters PEFT adapted (target_parameters it made up)

    def line(self, width: int = 140) -> str:
        value = json.dumps(self.value, default=sorted) if self.value is not None else "-"
        value = value if len(value) <= width else value[: width - 1] + "…"
        query = f"{self.query} (tower frozen)" if self.frozen else self.query
        return f"{self.model_type} | {query} | {self.form} | {value} | {self.detail}"


# ---------------------------------------------------------------- judging


@functools.lru_cache(maxsize=None)
def selection_model(model_type: str, frozen: bool):
    """The model a query is resolved on. Never injected into: the oracle builds its own."""
    return corpus.frozen_model(model_type)[0] if frozen else corpus.cached(model_type)


_ADAPTED: dict = {}


def _adapted(model_type: str, frozen: bool, config, wrap_any: bool) -> oracle.Adapted:
    """The oracle's answer; identical configs on the same model are injected once per process."""
    key = (model_type, frozen, wrap_any, _config_key(config))
    if key not in _ADAPTED:
        _ADAPTED[key] = oracle.peft_adapts(corpus.maker(model_type, frozen), config, wrap_any=wrap_any)
    return _ADAPTED[key]


def _config_key(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=lambda o: sorted(o) if isinstance(o, set) else repr(o))


def _says_why(exc: BaseException) -> bool:
    message = str(exc).strip()
    return len(message) >= 30 and not message.startswith("internal error")


def judge(model_type: str, query: str, frozen: bool = False) -> list[Outcome]:
    """The outcome of every judged form of one (architecture, query); [] when the selection is empty."""
    sel = select(selection_model(model_type, frozen), query)
    names = sel.names()
    if not names:
        return []
    outcomes = []
    for form in JUDGED:
        made = functools.partial(Outcome, model_type, query, frozen, form)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # patch()'s preflight warnings
            try:
                if form == "patch":
                    config = ts.patch(LoraConfig(), sel)
                    value = _patched_fields(config)
                else:
                    value = sel.to_peft(form)
                    config = LoraConfig(target_modules=value)
            except ts.TargetselError as exc:
                verdict = "refused" if _says_why(exc) else "wrong"
                outcomes.append(made(verdict, None, f"{type(exc).__name__}: {exc}"))
                continue
            except Exception as exc:  # targetsel crashed: not a refusal
                outcomes.append(made("wrong", None, f"targetsel raised {type(exc).__name__}: {exc}"))
                continue
        adapted = _adapted(model_type, frozen, config, wrap_any=form != "patch")
        outcomes.append(made(*_verdict(adapted, names, value)))
    return outcomes


def _patched_fields(config) -> dict:
    fields = {"target_modules": config.target_modules}
    for name in ("target_parameters", "exclude_modules", "modules_to_save", "rank_pattern", "alpha_pattern"):
        if getattr(config, name, None):
            fields[name] = getattr(config, name)
    return fields


def _some(names, limit: int = 4) -> str:
    """The first few names and a count (kept independent of targetsel's own display code)."""
    names = list(names)
    return ", ".join(names[:limit]) + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def _verdict(adapted: oracle.Adapted, names: list[str], value) -> tuple:
    if adapted.error:
        return "wrong", value, f"PEFT raised {adapted.error}"
    if list(adapted.modules) == names and not adapted.parameters:
        return "exact", value, ""
    wanted, got = set(names), set(adapted.modules)
    lost = tuple(n for n in names if n not in got)
    extra = tuple(n for n in adapted.modules if n not in wanted)
    parts = []
    if lost:
        parts.append(f"{len(lost)} selected not adapted: {_some(lost)}")
    if extra:
        parts.append(f"{len(extra)} unselected adapted: {_some(extra)}")
    if adapted.parameters:
        parts.append(f"{len(adapted.parameters)} parameter(s) adapted: {_some(adapted.parameters)}")
    if not parts:
        parts.append(f"same modules in another order: {list(adapted.modules)[:4]}…")
    return "wrong", value, "; ".join(parts), lost, extra, adapted.parameters


def all_cases(queries=None) -> list[tuple[str, str, bool]]:
    """(model_type, query, frozen) for the full product."""
    queries = corpus.QUERIES if queries is None else queries
    return [(t, q, False) for t, _ in corpus.ARCHS for q in queries] + [
        (t, corpus.FROZEN_QUERY, True) for t, _ in corpus.ARCHS
    ]


def _default_cases() -> list[tuple[str, str, bool]]:
    """Every architecture with every form, on three queries: one layer (the restriction PEFT's MoE
    conversion loses), the frozen tower, and one of the other queries in turn within each family
    (so every family meets as many different queries as it has members, up to all of them)."""
    anchor = "linear & layers:0"
    others = [q for q in corpus.QUERIES if q != anchor]
    seen = collections.Counter()
    cases = []
    for model_type, family in corpus.ARCHS:
        turn = others[seen[family] % len(others)]
        seen[family] += 1
        cases += [(model_type, anchor, False), (model_type, turn, False), (model_type, corpus.FROZEN_QUERY, True)]
    return cases


DEFAULT_CASES = _default_cases()
SLOW_CASES = [c for c in all_cases() if c not in DEFAULT_CASES]


def _case_id(case) -> str:
    model_type, query, frozen = case
    return f"{model_type}-{'frozen' if frozen else 'q%d' % corpus.QUERIES.index(query)}"


def _check(case) -> None:
    model_type, query, frozen = case
    outcomes = judge(model_type, query, frozen)
    wrong = [o for o in outcomes if o.verdict == "wrong"]
    assert not wrong, f"{len(wrong)} of {len(outcomes)} forms wrong for {query!r}:\n" + "\n".join(o.line() for o in wrong)


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=[_case_id(c) for c in DEFAULT_CASES])
def test_every_form_is_exact_under_real_injection(case):
    _check(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=[_case_id(c) for c in SLOW_CASES])
def test_every_form_is_exact_under_real_injection_full(case):
    _check(case)


# ---------------------------------------------------------------- the corpus itself


@pytest.mark.parametrize("model_type, family", corpus.ARCHS, ids=[t for t, _ in corpus.ARCHS])
def test_queries_select_something(model_type, family):
    model = corpus.cached(model_type)
    non_empty = [q for q in corpus.QUERIES if not select(model, q).is_empty()]
    assert len(non_empty) >= 5, f"{model_type}: only {len(non_empty)} of {len(corpus.QUERIES)} queries select anything"


@pytest.mark.parametrize("model_type, family", corpus.ARCHS, ids=[t for t, _ in corpus.ARCHS])
def test_frozen_tower_is_left_out(model_type, family):
    model, frozen = corpus.frozen_model(model_type)
    sel = select(model, corpus.FROZEN_QUERY)
    assert not sel.is_empty()
    if frozen in ("vision", "audio"):
        assert not set(sel.names()) & set(select(model).component(frozen).names())


@pytest.mark.parametrize("model_type, family", corpus.ARCHS, ids=[t for t, _ in corpus.ARCHS])
def test_o_n_list_rule_agrees_with_peft(model_type, family):
    model = corpus.cached(model_type)
    names = [n for n, _ in model.named_modules()]
    leaves = [n.rsplit(".", 1)[-1] for n in names if n]
    lists = [
        ["q_proj", "v_proj", "fc1", "dense", "c_attn", "query", "value"],
        sorted(set(leaves))[:25],
        [n for n in names if n][:3] + [".".join(n.split(".")[-2:]) for n in names if n.count(".") >= 2][:5],
    ]
    for entries in lists:
        config = LoraConfig(target_modules=entries)
        peft_says = [bool(n) and bool(check_target_module_exists(config, n)) for n in names]
        ours = [bool(n) and m for n, m in zip(names, list_matches(entries, names))]
        assert ours == peft_says, entries


def test_the_corpus_is_varied():
    families = {}
    for model_type, family in corpus.ARCHS:
        families.setdefault(family, []).append(model_type)
    assert len(corpus.ARCHS) >= 83
    assert len({t for t, _ in corpus.ARCHS}) == len(corpus.ARCHS)
    assert {f: len(v) >= 3 for f, v in families.items()} == {f: True for f in families}
    conversions = {corpus.conversion(t) for t, _ in corpus.ARCHS}
    assert {"mixtral", "qwen2_moe", None} <= conversions  # both PEFT MoE conversions, and none


def test_default_run_covers_every_architecture_and_form():
    assert {t for t, _, _ in DEFAULT_CASES} == {t for t, _ in corpus.ARCHS}
    assert set(DEFAULT_CASES) | set(SLOW_CASES) == set(all_cases())


# ---------------------------------------------------------------- the oracle itself


def test_oracle_reads_modules_and_parameters_off_the_tree():
    """Fused experts through target_parameters plus attention through target_modules, on Mixtral."""
    config = LoraConfig(target_modules=["q_proj"], target_parameters=["mlp.experts.gate_up_proj"])
    adapted = oracle.peft_adapts(corpus.maker("mixtral"), config)
    assert adapted.error is None
    assert adapted.modules == ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj")
    assert adapted.parameters == ("model.layers.0.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.gate_up_proj")
    assert set(adapted.targeted_parameter_names) == set(adapted.parameters)


def test_oracle_walks_nested_parameter_wrappers():
    config = LoraConfig(target_modules=[], target_parameters=["experts.gate_up_proj", "experts.down_proj"])
    adapted = oracle.peft_adapts(corpus.maker("qwen3_moe"), config)
    assert adapted.modules == ()
    assert sorted(adapted.parameters) == sorted(
        f"model.layers.{i}.mlp.experts.{p}" for i in (0, 1) for p in ("gate_up_proj", "down_proj")
    )


def test_oracle_reports_saved_and_token_wrappers():
    config = LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"], trainable_token_indices=[0, 1])
    adapted = oracle.peft_adapts(corpus.maker("llama"), config)
    assert adapted.error is None, adapted.error
    assert adapted.saved == ("lm_head",)
    assert adapted.tokens == ("model.embed_tokens",)
    assert adapted.modules == ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj")


def test_oracle_reports_peft_errors_and_stand_ins():
    norms = LoraConfig(target_modules=["input_layernorm"])
    assert oracle.peft_adapts(corpus.maker("llama"), norms).error_type == "ValueError"
    adapted = oracle.peft_adapts(corpus.maker("llama"), norms, wrap_any=True)
    assert adapted.modules == adapted.stand_ins == ("model.layers.0.input_layernorm", "model.layers.1.input_layernorm")


def test_oracle_never_reuses_a_model():
    built = []

    def make():
        built.append(corpus.build("llama"))
        return built[-1]

    config = LoraConfig(target_modules=["q_proj"])
    assert oracle.peft_adapts(make, config) == oracle.peft_adapts(make, config)
    assert len(built) == 2 and built[0] is not built[1]
    assert config.target_modules == {"q_proj"}  # the caller's config is not touched


@pytest.mark.parametrize("model_type", corpus.ROUNDTRIP_ARCHS)
def test_save_and_reload_adapts_the_same(model_type):
    """A save + reload sample: patch()'s config for `linear & layers:0` on a tiny CPU model with
    real weights reloads onto a fresh model with the same adapted modules and every key loaded."""
    model = corpus.build_tiny(model_type)
    sel = select(model, "linear & layers:0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = ts.patch(LoraConfig(r=2), sel)
        except ts.TargetselError as exc:  # a refusal that says why is an acceptable outcome
            assert _says_why(exc), exc
            return
    result = oracle.roundtrip(functools.partial(corpus.build_tiny, model_type), config)
    assert result.before.modules == tuple(sel.names())
    assert result.ok, result.describe()


@pytest.mark.parametrize("model_type", ["mixtral", "qwen3_moe"])
def test_save_and_reload_fused_experts(model_type):
    """target_parameters on fused experts survive a save + reload (PEFT converts the keys on load)."""
    model = corpus.build_tiny(model_type)
    psel = select(model, "glob:**.mlp.experts").parameters("gate_up_proj")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = ts.patch(LoraConfig(r=2), psel)
    result = oracle.roundtrip(functools.partial(corpus.build_tiny, model_type), config)
    assert sorted(result.before.parameters) == sorted(psel.names())
    assert result.ok, result.describe()


# ---------------------------------------------------------------- regressions found by the corpus


def test_regression_moe_conversion_regex_loses_the_layer_restriction():
    r"""Found by the corpus: peft 0.21 resolves a regex target to bare leaf names on transformers-5 MoE
    models, so `^model\.layers\.0\...$` adapts every layer. patch() must hand out a config PEFT keeps."""
    sel = select(corpus.cached("mixtral"), "linear & layers:0")
    regex = "^(?:" + "|".join(re.escape(n) for n in sel.names()) + ")$"
    raw = oracle.peft_adapts(corpus.maker("mixtral"), LoraConfig(target_modules=regex))
    assert set(raw.modules) > set(sel.names())  # PEFT's behaviour, which the oracle sees
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = ts.patch(LoraConfig(), sel)
    adapted = oracle.peft_adapts(corpus.maker("mixtral"), config)
    assert list(adapted.modules) == sel.names() and not adapted.parameters


def test_regression_deepseek_dense_mlp_cannot_be_targeted_exactly():
    """Found by the corpus: peft 0.21 maps every *_proj MLP target of DeepSeek-V3 to fused expert
    parameters, so the dense MLP layers cannot be adapted through target_modules. patch() either
    refuses saying why, or hands out a config PEFT adapts exactly."""
    sel = select(corpus.cached("deepseek_v3"), "linear & glob:**.mlp.*_proj")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = ts.patch(LoraConfig(), sel)
        except ts.TargetselError as exc:
            assert _says_why(exc), exc
            return
    adapted = oracle.peft_adapts(corpus.maker("deepseek_v3"), config)
    assert list(adapted.modules) == sel.names() and not adapted.parameters, adapted.describe()


# ---------------------------------------------------------------- the fast path is PEFT


def _fast_and_real(model, config):
    from targetsel import dry_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dry_run(model, config), dry_run(model, config, real=True)


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=[_case_id(c) for c in DEFAULT_CASES])
def test_fast_path_agrees_with_real_injection(case):
    """verify()'s O(N) path and a real get_peft_model on a skeleton give the same outcome for every
    form targetsel hands out (and for the raw name list, which PEFT may rewrite), and the real one
    agrees with the independent oracle on a freshly built model."""
    model_type, query, frozen = case
    model = selection_model(model_type, frozen)
    sel = select(model, query)
    if sel.is_empty():
        return
    configs = {"names": LoraConfig(target_modules=sel.names())}
    for form in ("suffixes", "regex"):
        try:
            configs[form] = LoraConfig(target_modules=sel.to_peft(form, check_peft=False))
        except ts.SelectionError:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            configs["patch"] = ts.patch(LoraConfig(), sel)
        except ts.TargetselError:
            pass
    for label, config in configs.items():
        fast, real = _fast_and_real(model, config)
        assert fast.same_outcome(real), f"{label}: fast {fast} vs real {real}"
        truth = _adapted(model_type, frozen, config, wrap_any=False)
        assert (real.error is None) == (truth.error is None), f"{label}: real {real.error} vs PEFT {truth.error}"
        if real.error is None:
            assert (real.modules, tuple(sorted(real.parameters))) == (truth.modules, tuple(sorted(truth.parameters))), label
