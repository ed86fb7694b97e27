"""`ranks=` / `alphas=` of `patch()`: `rank_pattern` / `alpha_pattern` keys that give every selected
module exactly its intended value under PEFT's own lookup (`peft.utils.other.get_pattern_key`)."""

from __future__ import annotations

from targetsel.errors import ConfigError, ModelMismatchError, TargetselError
from targetsel.model.resolution import Bound, Resolution


def value_patterns(config, res: Resolution, names: list[str], field: str, base_field: str, mapping) -> dict:
    """`rank_pattern`/`alpha_pattern` keys giving each selected module exactly its intended value."""
    from peft.utils.other import get_pattern_key

    from targetsel.text.grouping import summarize_names
    from targetsel.text.names_regex import names_regex

    # One piece on purpose: the refusals, the key search and the exactness check read the same lookup state.
    what = "ranks" if field == "rank_pattern" else "alphas"
    if str(getattr(config.peft_type, "value", config.peft_type)) == "ADALORA":
        raise ConfigError(
            f"AdaLoraConfig does not take {what}=: AdaLoRA starts every module at init_r and allocates ranks itself "
            f"during training (its rank_pattern is that allocation's output, and save_pretrained fails on a "
            f"hand-written one). Set init_r / target_r on the config, or use LoraConfig for per-module ranks."
        )
    if not hasattr(config, field):
        raise ConfigError(f"{type(config).__name__} has no {field}: {what}= works with LoRA-family configs")
    if getattr(config, field, None):
        raise ConfigError(
            f"{type(config).__name__} already carries {field}={getattr(config, field)!r}; pass {what}= on a config "
            f"without {field} so targetsel can make every key exact"
        )
    if not isinstance(mapping, dict):
        raise ConfigError(f"{what}= maps sub-selections (Selection or query string) to values, got {type(mapping).__name__}")
    default = getattr(config, base_field, None)
    intended: dict[str, object] = {}
    chosen = set(names)
    for key, val in mapping.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val <= 0 or (what == "ranks" and not isinstance(val, int)):
            raise ConfigError(f"{what}[{_label(key)}] = {val!r}: expected a positive {'integer' if what == 'ranks' else 'number'}")
        if not isinstance(key, (str, Bound)):
            raise ConfigError(f"{what}= keys are Selections or query strings, got {type(key).__name__} {key!r}")
        hit = [n for n in _within(res, key).names if n in chosen]
        if not hit:
            raise ConfigError(f"{what}[{_label(key)}] selects none of the {len(names)} selected modules; it would have no effect")
        for n in hit:
            if n in intended and intended[n] != val:
                raise ConfigError(
                    f"{what}: {n!r} is in two sub-selections with different values ({intended[n]!r} and {val!r}); "
                    "make the sub-selections disjoint"
                )
            intended[n] = val
    groups: dict[object, list[str]] = {}
    for n in names:  # model order, so the keys read in order
        if n in intended and intended[n] != default:
            groups.setdefault(intended[n], []).append(n)
    pattern = {}
    for val, group in groups.items():
        key = names_regex(group)
        others = [n for n in names if n not in set(group)]
        # PEFT looks keys up with re.match(rf"(.*\.)?({key})$", name): a suffix of another name can
        # match too; anchoring with ^ inside the group makes the key a full-name match.
        if any(get_pattern_key([key], n) == key for n in others):
            key = "^" + key
        pattern[key] = val
    keys = list(pattern)
    wrong = [
        n for n in names
        if pattern.get(get_pattern_key(keys, n), default) != intended.get(n, default)
    ]
    if wrong:  # pragma: no cover - the anchored keys are exact by construction
        raise TargetselError(f"internal error: {field} is not exact for {summarize_names(wrong)}; please report it")
    return pattern


def _within(res: Resolution, key) -> Resolution:
    """`res` narrowed by a query string or a selection of the same model (`selection.where(key)`)."""
    if isinstance(key, Bound):
        if key.model is not res.model:
            raise ModelMismatchError(
                f"cannot combine selections of two different models with 'where': {type(res.model).__name__} at "
                f"{id(res.model):#x} and {type(key.model).__name__} at {id(key.model):#x}. Select both from one model."
            )
        return res.refined(key.node)
    from targetsel.model.evaluate import check_against_model
    from targetsel.query.parser import parse

    node = parse(key).root
    check_against_model(node, res.index)
    return res.refined(node)


def _label(key) -> str:
    return repr(key) if isinstance(key, str) else repr(getattr(key, "query", key))
