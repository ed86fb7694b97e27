"""Selecting `nn.Parameter`s, for what no module-level target can reach.

transformers 5 fuses the experts of a mixture-of-experts block into 3-D parameters
(`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`): there is no `nn.Linear` per expert to put
in `target_modules`. PEFT reaches them with `target_parameters`, a *list* matched against
`f"{module_name}.{param_name}"` — for every module and each parameter registered directly on it —
by exact name or dotted suffix (`peft.tuners.tuners_utils.BaseTuner._inject_parameters`).
`ParameterSelection` picks such names and compiles them to a list that rule resolves exactly.
"""

from __future__ import annotations

from typing import Iterator, Optional

from targetsel.errors import PatternError, SelectionError, TargetselError
from targetsel.model.resolution import Bound, Resolution, remember
from targetsel.views.snapshot import Resolved, snapshot


def parameter_keys(index) -> list[tuple[int, str, str]]:
    """(module position, parameter name, PEFT key) for every parameter registered on every module.

    The key is what PEFT compares: `module_name + "." + param_name` — for the root module too,
    whose key therefore starts with a dot, exactly as PEFT builds it.
    """
    cached = index._cached.get("parameter_keys")
    if cached is None:
        cached = []
        for pos, (name, module) in enumerate(zip(index.names, index.modules)):
            for pname, param in module._parameters.items():
                if param is not None:
                    cached.append((pos, pname, f"{name}.{pname}"))
        index._cached["parameter_keys"] = cached
    return cached


class ParameterSelection:
    """The parameters, by name, inside the modules of a `Selection`; immutable like it.

    >>> select(model).glob("**.mlp.experts").parameters("gate_up_proj$").names()
    ['model.layers.0.mlp.experts.gate_up_proj', ...]
    """

    __slots__ = ("_selection", "_pattern")

    def __init__(self, selection, pattern: Optional[str] = None):
        if not isinstance(selection, Bound):
            raise TargetselError(f"ParameterSelection needs a Selection, got {type(selection).__name__}")
        if pattern is not None:
            from targetsel.query.patterns import compile_regex

            if not isinstance(pattern, str) or not pattern:
                raise PatternError(f"parameters(pattern): a non-empty regex string, got {pattern!r}")
            compile_regex(pattern)
        self._selection = selection
        self._pattern = pattern

    @property
    def model(self):
        return self._selection.model

    @property
    def selection(self):
        return self._selection

    @property
    def pattern(self) -> Optional[str]:
        return self._pattern

    @property
    def memory_key(self) -> tuple:
        return ("parameters", self._selection.node, self._pattern)

    def _selected(self, res: Optional[Resolution] = None) -> tuple[list[str], list[str]]:
        """(selected keys, every key) in model order."""
        res = res if res is not None else self._selection.resolution()
        index, mask = res.index, res.mask
        inside = (mask | index.ancestors_mask(mask)).tolist()
        keys = parameter_keys(index)
        candidates = [key for pos, _, key in keys if inside[pos] and pos > 0]
        if self._pattern is not None:
            from targetsel.query.patterns import search_names

            candidates = [candidates[i] for i in search_names(self._pattern, candidates, range(len(candidates)))]
        return candidates, [key for _, _, key in keys]

    def names(self) -> list[str]:
        """Full parameter names (`module.param`), model order; `[]` when none."""
        return self._selected()[0]

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def is_empty(self) -> bool:
        return not self.names()

    def resolved(self) -> Resolved:
        """What this parameter selection means now, frozen (`Resolved`, kind "parameters"): for logs and `audit()`."""
        res = self._selection.resolution()
        names = self._selected(res)[0]
        remember(self.model, self.memory_key, names)
        return snapshot(res, names=names, kind="parameters", pattern=self._pattern)

    def __repr__(self) -> str:
        pattern = "" if self._pattern is None else f", {self._pattern!r}"
        stale = self._selection.stale_note(f"ParameterSelection({self._selection.query!r}{pattern})")
        if stale:
            return stale
        names = self.names()
        shown = ", ".join(names[:4]) + (f", … {len(names) - 4} more" if len(names) > 4 else "")
        return f"ParameterSelection({self._selection.query!r}{pattern}) — {len(names)} parameter(s): [{shown}]"

    def to_peft(self) -> list[str]:
        """The `target_parameters` list PEFT resolves to exactly these parameters (shortest exact suffixes)."""
        from targetsel.views.targets import list_matches, minimal_suffixes

        res = self._selection.resolution()
        selected, keys = self._selected(res)
        if not selected:
            raise SelectionError(
                f"no parameter of the {res.count} selected module(s) matches "
                f"{self._pattern!r}" if self._pattern else "the selected modules hold no parameters"
            )
        # A parametrized tensor (torch.nn.utils.parametrize) is stored as
        # `mod.parametrizations.weight.original`; PEFT reaches it only by the exact key `mod.weight`, and
        # matching the storage itself would replace the ParametrizationList (the model stops running).
        exact = {k: _parametrized_key(k) for k in selected if _parametrized_key(k)}
        plain = [k for k in selected if k not in exact]
        chosen = set(plain)
        mask = [k in chosen for k in keys]
        suffixes = minimal_suffixes(plain, ["", *keys], [False, *mask]) if plain else []
        if suffixes is None:
            over = [k for k, m in zip(keys, list_matches(plain, keys)) if m and k not in chosen]
            raise SelectionError(
                f"target_parameters is matched by exact name or dotted suffix only, and {len(over)} unselected "
                f"parameter name(s) end with a selected one (e.g. {over[:3]}): no list targets exactly this "
                "selection. Select those parameters too, or rename the modules."
            )
        matched = list_matches(suffixes, keys)
        if matched != mask:  # pragma: no cover - minimal_suffixes is exact by construction
            raise AssertionError("internal error: the target_parameters list is not exact; please report it")
        clash = [k for k in keys if k not in chosen and any(k.endswith("." + key) for key in exact.values())]
        if clash:
            raise SelectionError(
                f"the parametrized parameter(s) {sorted(exact.values())} can only be targeted by their full key, "
                f"which {len(clash)} other parameter name(s) end with (e.g. {clash[:3]}): no list targets exactly "
                "this selection. Rename the modules, or leave the parametrized parameters out."
            )
        suffixes = suffixes + [key for key in dict.fromkeys(exact.values()) if key not in suffixes]
        remember(self.model, self.memory_key, selected)  # so audit() can compare after get_peft_model has wrapped them
        return suffixes


def _parametrized_key(storage: str) -> str:
    """`mod.weight` for the storage key `mod.parametrizations.weight.original` (or `original0`, …); "" otherwise."""
    head, sep, tail = storage.rpartition(".parametrizations.")
    if not sep:
        return ""
    tensor, dot, leaf = tail.partition(".")
    return f"{head}.{tensor}" if dot and leaf.startswith("original") and "." not in leaf else ""
