"""One walk of a model: names, structure, classes and parameter ownership, cached per model.

Every filter and terminal reads this index instead of walking the model again. Positions are
`named_modules()` order (pre-order, shared modules listed once), so the subtree of module `i` is
the contiguous range `[i, end[i])` and subtree sums are differences of one prefix sum. "Listed
once" is `named_modules()`' own rule: its memo is a `set`, so a module *equal* (`__eq__`/`__hash__`)
to one already listed is skipped with its subtree, as PEFT, `parameters()` and `state_dict` skip it.

Freshness. Structure is cached; `requires_grad` never is (it is read at each terminal). Every
terminal compares the lengths of the model's container dicts with the build's (edits torch makes
without hooks — `del`, `insert`, `pop`, `clear` — change one). torch's global registration hooks
bump a process-wide generation (model/hooks.py; targetsel's own throwaway models do not); an index
whose generation is behind compares its containers' contents and every module's parameters with
the build's, in C (under a tenth of a walk), and rebuilds only if they changed. An index is
replaced, never updated, so everything derived from its structure is computed once per index:
`cached_property` for what the index itself offers, `memo(key, fn)` for what other modules of the
model layer derive from it (the linear family, components, what each pattern matched).
"""

from __future__ import annotations

import functools
import operator
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress
from typing import Any, Callable, Optional

import torch
from torch import nn

from targetsel.errors import NotAModuleError
from targetsel.model.arrays import bool_tensor, long_tensor
from targetsel.model.blocks import Blocks, find_blocks
from targetsel.model.classes import is_tuner_class
from targetsel.model.hooks import current_generation
from targetsel.model.quantized import logical_numel
from targetsel.model.threads import single_threaded
from targetsel.model.walk import walk
from targetsel.model.unwrap import unwrap
from targetsel.model.wrappers import user_name


_cache: "weakref.WeakKeyDictionary[nn.Module, ModelIndex]" = weakref.WeakKeyDictionary()
_REQUIRES_GRAD = operator.attrgetter("requires_grad")
_MODULES, _PARAMETERS = operator.attrgetter("_modules"), operator.attrgetter("_parameters")
_NOT_NONE = functools.partial(operator.is_not, None)


@dataclass(eq=False)
class ModelIndex:
    model_ref: "weakref.ref[nn.Module]"
    names: list[str]
    modules: list[nn.Module]
    parents: list[int]
    ends: list[int]
    n_children: list[int]
    class_ids: list[int]
    classes: list[type]
    params: list[nn.Parameter]  # unique parameter objects
    param_names: list[str]  # the first registration's full name (named_parameters order)
    # Signed registrations: (position, parameter index, +1/-1). A -1 at the lowest common
    # ancestor of two registrations of one tied parameter makes subtree sums count it once.
    reg_pos: list[int]
    reg_param: list[int]
    reg_sign: list[int]
    generation: int
    _position_of: dict = field(default_factory=dict, repr=False)  # module → position (hashed as named_modules() does)
    _position_by_id: dict = field(default_factory=dict, repr=False)  # id(module) → position, unhashable modules only
    _own_params: list = field(default_factory=list, repr=False)  # every module's own parameters, flattened
    _param_pos: dict = field(default_factory=dict, repr=False)  # id(parameter) → index in `params`
    _container_dicts: list = field(default_factory=list, repr=False)  # the live `_modules` dicts …
    _container_copies: list = field(default_factory=list, repr=False)  # … their contents at build time …
    _container_lens: list = field(default_factory=list, repr=False)  # … and their lengths
    _cached: dict = field(default_factory=dict, repr=False)  # memo(): derived by other model-layer modules
    _grad_sums: Optional[tuple] = field(default=None, repr=False)  # (requires_grad flags, their subtree sums)
    _met_listed: bool = field(default=True, repr=False)  # the walk met a registration of an already-listed module

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()`, once per index: for values other modules derive from this index's structure
        (never from `requires_grad`, which is read at each terminal)."""
        try:
            return self._cached[key]
        except KeyError:
            value = self._cached[key] = compute()
            return value

    # ------------------------------------------------------------------ structure
    @property
    def size(self) -> int:
        return len(self.names)

    def position_of_module(self, module: nn.Module) -> Optional[int]:
        """The position of `module`, or of the listed module equal to it (`named_modules()`' rule)."""
        try:
            pos = self._position_of.get(module)
        except Exception:  # unhashable, or an __eq__ that raises: listed by identity
            pos = None
        return pos if pos is not None else self._position_by_id.get(id(module))

    def position(self, name: str) -> Optional[int]:
        return self._positions.get(name)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def universe(self) -> torch.Tensor:
        """Every named submodule: all positions but the root."""
        mask = torch.ones(self.size, dtype=torch.bool)
        mask[0] = False
        return mask

    def ends_tensor(self) -> torch.Tensor:
        return self._ends_t

    @cached_property
    def _ends_t(self) -> torch.Tensor:
        return long_tensor(self.ends)

    def leaf_mask(self) -> torch.Tensor:
        return self._leaf_t

    @cached_property
    def _leaf_t(self) -> torch.Tensor:
        return long_tensor(self.n_children) == 0

    def class_mask(self, predicate) -> torch.Tensor:
        """Modules whose class satisfies `predicate(cls)` (evaluated once per distinct class)."""
        lut = torch.tensor([bool(predicate(c)) for c in self.classes], dtype=torch.bool)
        return lut[self.class_ids_tensor()]

    def class_ids_tensor(self) -> torch.Tensor:
        return self._class_ids_t

    @cached_property
    def _class_ids_t(self) -> torch.Tensor:
        return long_tensor(self.class_ids)

    def class_names(self) -> list[str]:
        """Every class name present in the model, including base classes (for suggestions)."""
        return self._class_names

    @cached_property
    def _class_names(self) -> list[str]:
        seen = {}
        for cls in self.classes:
            for base in cls.__mro__:
                if base is not object:
                    seen.setdefault(base.__name__, None)
        return list(seen)

    @single_threaded  # the checks and the fast path call it outside an evaluation: no thread pool for 63k entries
    def ancestors_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Positions with at least one strict ancestor in `mask`."""
        # Prefix-sum trick: a selected module at position p covers (p, end[p]); mark +1 at p+1 and
        # -1 at end[p], cumulate, and every covered position gets a positive count.
        sel = mask.nonzero().flatten()
        delta = torch.zeros(self.size + 1, dtype=torch.long)
        delta.index_add_(0, sel + 1, torch.ones_like(sel))
        delta.index_add_(0, self.ends_tensor()[sel], -torch.ones_like(sel))
        return delta.cumsum(0)[: self.size] > 0

    # ------------------------------------------------------------------ parameters
    @single_threaded
    def subtree_sum(self, per_param: torch.Tensor) -> torch.Tensor:
        """For each module, the sum of `per_param` over the distinct parameters it uses (its subtree)."""
        reg_pos, reg_param, reg_sign = self.registrations
        weights = per_param.to(torch.float64)[reg_param] * reg_sign
        acc = torch.zeros(self.size + 1, dtype=torch.float64)
        acc.index_add_(0, reg_pos + 1, weights)
        prefix = acc.cumsum(0)
        return prefix[self.ends_tensor()] - prefix[: self.size]

    @cached_property
    def registrations(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`reg_pos`, `reg_param`, `reg_sign` as tensors."""
        return long_tensor(self.reg_pos), long_tensor(self.reg_param), long_tensor(self.reg_sign).to(torch.float64)

    # Until views/display.py reads `registrations`:
    def _reg_pos_t(self):
        return self.registrations[0]

    def _reg_param_t(self):
        return self.registrations[1]

    def _reg_sign_t(self):
        return self.registrations[2]

    def param_counts(self) -> torch.Tensor:
        """Distinct parameters each module uses (structural, cached)."""
        return self._param_counts

    @cached_property
    def _param_counts(self) -> torch.Tensor:
        return self.subtree_sum(torch.ones(len(self.params)))

    def param_numels(self) -> torch.Tensor:
        """Parameter elements each module uses, tied weights counted once (structural, cached)."""
        return self._param_numels

    @cached_property
    def _param_numels(self) -> torch.Tensor:
        # logical sizes: a packed 4-bit weight counts the float elements it stands for
        return self.subtree_sum(torch.tensor([float(logical_numel(p)) for p in self.params], dtype=torch.float64))

    def requires_grad_vector(self) -> torch.Tensor:
        """`requires_grad` of every distinct parameter, read now (never cached)."""
        return bool_tensor(map(_REQUIRES_GRAD, self.params))

    @single_threaded
    def grad_counts(self, within: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(parameters used, of which requires_grad) per module, read now.

        The flags are read at every call; only their subtree sums are reused while the flags read
        equal the ones they were computed from. Callers must not modify the tensors returned.
        `within` (a mask): only those modules' counts are needed, so only the parameters they use
        are read — the counts elsewhere are then meaningless."""
        if within is not None and 4 * int(within.sum()) < self.size:
            needed = self._params_used(within)
            if 2 * len(needed) < len(self.params):
                read = bool_tensor(map(_REQUIRES_GRAD, map(self.params.__getitem__, needed.tolist())))
                last = self._grad_sums
                if last is not None and torch.equal(last[0][needed], read):
                    return self.param_counts(), last[1]
                flags = torch.zeros(len(self.params), dtype=torch.bool)
                flags[needed] = read
                return self.param_counts(), self.subtree_sum(flags)
        flags = self.requires_grad_vector()
        last = self._grad_sums
        if last is None or not torch.equal(last[0], flags):
            last = self._grad_sums = (flags, self.subtree_sum(flags))
        return self.param_counts(), last[1]

    def _params_used(self, within: torch.Tensor) -> torch.Tensor:
        """Indices (sorted) of the parameters the modules of `within` use: registered in their subtrees."""
        covered = within | self.ancestors_mask(within)
        reg_pos, reg_param, _ = self.registrations
        return torch.unique(reg_param[covered[reg_pos]])

    # ------------------------------------------------------------------ special modules
    def output_head_position(self) -> Optional[int]:
        """The module `model.get_output_embeddings()` returns, if the model has one."""
        return self._head

    @cached_property
    def _head(self) -> Optional[int]:
        getter = getattr(self.model_ref(), "get_output_embeddings", None)
        if not callable(getter):
            return None
        try:
            head = getter()
        except Exception:  # some models raise NotImplementedError or AttributeError here
            return None
        return (self.position_of_module(head) or None) if isinstance(head, nn.Module) else None

    def aliases(self) -> dict[int, list[str]]:
        """Positions of modules registered under more than one name → their other names (listed once,
        under the first, by `named_modules()`; PEFT replaces them under that name only)."""
        return self._aliases

    @cached_property
    def _aliases(self) -> dict[int, list[str]]:
        if not self._met_listed:
            # Every registration led to a new module, so no module has a second name: the second
            # walk below (a full one, ~2× the first on 60k modules) would find nothing.
            return {}
        by_id: dict[int, list[str]] = {}
        for name, module in self.model_ref().named_modules(remove_duplicate=False):
            by_id.setdefault(id(module), []).append(user_name(name))  # without FSDP1/checkpoint segments
        found = {}
        for pos, module in enumerate(self.modules):
            names = by_id.get(id(module), [])
            if len(names) > 1:
                found[pos] = [n for n in names if n != self.names[pos]]
        return found

    @cached_property
    def blocks(self) -> Blocks:
        """Per module: block container position, block index, container length (model/blocks.py)."""
        return find_blocks(self)

    def block_info(self) -> tuple[list[int], list[int], list[int]]:
        """`blocks` as lists: (container position, block index, container length), -1s outside any block."""
        return self._block_lists

    @cached_property
    def _block_lists(self) -> tuple[list[int], list[int], list[int]]:
        return tuple(t.tolist() for t in self.blocks)

    # ------------------------------------------------------------------ PEFT
    def has_tuner_layers(self) -> bool:
        """Does the model hold PEFT adapter layers (`BaseTunerLayer`), i.e. has `get_peft_model` rewritten it?"""
        return self._has_tuner_layers

    @cached_property
    def _has_tuner_layers(self) -> bool:
        return any(self._tuner_class_flags())

    def tuner_layer_count(self) -> int:
        flags = self._tuner_class_flags()
        return sum(1 for c in self.class_ids if flags[c]) if any(flags) else 0

    def _tuner_class_flags(self) -> list[bool]:
        return [is_tuner_class(c) for c in self.classes]  # per distinct class, not per module

    # ------------------------------------------------------------------ freshness
    def is_current(self) -> bool:
        # Container lengths first, on every call: `del parent.child`, `del layers[i]`, `insert`,
        # `pop` and `clear` fire no hook, but each changes a container's length — and comparing
        # lengths reads only the container dicts (0.3 ms at 63k modules), where comparing their
        # contents touches every module (≈ 4% of a walk, most of a further query's budget).
        if list(map(len, self._container_dicts)) != self._container_lens:
            return False
        now = current_generation()
        if self.generation == now:
            return True
        # A registration happened somewhere (often in another model). A module built since and
        # written straight into a `_modules` dict (as quantization code does) was registered
        # through hooks when it was built, so the full comparison here sees it. Replacing a child
        # in place by a module built before the last check, with no registration since, is the
        # one edit no check sees: `forget(model)` after such code.
        if self._container_dicts == self._container_copies and self._structure_unchanged():  # dict ==, in C
            self.generation = now
            return True
        return False

    def _structure_unchanged(self) -> bool:
        # After a registration somewhere (often in another model): leaves must still be leaves
        # (containers were compared above) and every module must hold the same parameter objects,
        # in the same order. Reads the live tree against what the build recorded, so the build
        # itself needs no per-module copies; map/filter/chain keep the 60k-module loop in C.
        if any(map(len, map(_MODULES, self._leaves))):
            return False
        held = filter(_NOT_NONE, chain.from_iterable(map(dict.values, map(_PARAMETERS, self.modules))))
        return list(map(self._param_pos.get, map(id, held))) == self._own_params

    @cached_property
    def _leaves(self) -> list[nn.Module]:
        return list(compress(self.modules, map(operator.not_, self.n_children)))


@single_threaded
def build_index(model: nn.Module) -> ModelIndex:
    """Walk the model once (model/walk.py) into a fresh, uncached index."""
    return ModelIndex(model_ref=weakref.ref(model), **unwrap(walk(model)))  # wrappers: model/wrappers.py


def get_index(model: nn.Module, *, for_names: bool = False) -> ModelIndex:
    """The current index of `model`, built on first use and rebuilt when its structure changed.

    `for_names=True` is for building selectors (checking that the names they mention exist): it
    skips the per-call container comparison when no registration happened since the last check.
    Every terminal (names, masks, display) uses the full check, so answers are never stale.
    """
    if not isinstance(model, nn.Module):
        raise NotAModuleError(
            f"select() needs a torch.nn.Module, got {type(model).__module__}.{type(model).__qualname__}"
            + (": did you pass a PEFT config or a model name? Build the model first." if isinstance(model, (str, dict)) else "")
        )
    index = _cache.get(model)
    if for_names and index is not None and index.generation == current_generation():
        return index
    if index is None or not index.is_current():
        index = build_index(model)
        _cache[model] = index
    return index


def forget(model: nn.Module) -> None:
    """Drop the cached index of `model` (for code that edits `module._modules` directly)."""
    _cache.pop(model, None)

