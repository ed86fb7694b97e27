"""One walk of a model: names, structure, classes and parameter ownership, cached per model.

Every filter and terminal reads this index instead of walking the model again. Positions are
`named_modules()` order (pre-order, shared modules listed once), so the subtree of module `i` is
the contiguous range `[i, end[i])` and subtree sums are differences of one prefix sum. "Listed
once" is `named_modules()`' own rule: its memo is a `set`, so a module *equal* (`__eq__`/`__hash__`)
to one already listed is skipped with its subtree, as PEFT, `parameters()` and `state_dict` skip it.

Freshness. Structure is cached; `requires_grad` never is (it is read at each terminal). torch
calls global registration hooks whenever a submodule or parameter is assigned through
`setattr`/`add_module`/`register_parameter` — which is how torch, transformers and PEFT change
models — so those bump a process-wide counter. An index whose counter is behind re-checks the
model's structure (about 5% of a walk) and rebuilds only if it really changed.
"""

from __future__ import annotations

import functools
import gc
import itertools
import sys
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from targetsel.errors import NotAModuleError


# The thread count the caller had, while targetsel runs single-threaded (0: not inside).
_callers_threads = threading.local()


@contextmanager
def _one_thread():
    # The index's tensors are small (one entry per module); torch's intra-op thread pool only adds
    # overhead to them, and on a busy machine its spinning workers made a first query 4× slower
    # (benchmarks/). So targetsel's own tensor work runs on the calling thread.
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    outer, _callers_threads.n = getattr(_callers_threads, "n", 0), n
    try:
        yield
    finally:
        _callers_threads.n = outer
        torch.set_num_threads(n)


@contextmanager
def callers_threads():
    """Give user code (`.where(fn)`) back the thread count its caller had: fn may do real tensor work."""
    n = getattr(_callers_threads, "n", 0)
    if not n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(1)


def single_threaded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_thread():
            return fn(*args, **kwargs)

    return wrapper


_generation = itertools.count(1)
_current_generation = 0


def _bump(*_args):
    global _current_generation
    _current_generation = next(_generation)
    return None  # a registration hook must return None to leave the value unchanged


_hook_handles = (
    nn.modules.module.register_module_module_registration_hook(_bump),
    nn.modules.module.register_module_parameter_registration_hook(_bump),
)

_cache: "weakref.WeakKeyDictionary[nn.Module, ModelIndex]" = weakref.WeakKeyDictionary()

# Quantized linear classes PEFT can wrap that are not nn.Linear subclasses, by class name so that
# their packages (auto-gptq, autoawq, hqq, eetq, …) need not be imported.
QUANTIZED_LINEAR_NAMES = frozenset(
    {
        "QuantLinear",  # auto-gptq / gptqmodel
        "WQLinear_GEMM",  # autoawq
        "WQLinear_GEMV",
        "HQQLinear",  # hqq
        "EetqLinear",  # eetq
        "QuantizedLinear",  # torchao / optimum-quanto style
        "QLinear",  # optimum-quanto
        "AqlmQuantizedLinear",
        "Linear8bitLt",  # bitsandbytes (also nn.Linear subclasses)
        "Linear4bit",
    }
)


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
    _container_copies: list = field(default_factory=list, repr=False)  # … and their contents at build time
    _cached: dict = field(default_factory=dict, repr=False)

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
        pos = self._cached.get("positions")
        if pos is None:
            pos = self._cached["positions"] = {n: i for i, n in enumerate(self.names)}
        return pos.get(name)

    def universe(self) -> torch.Tensor:
        """Every named submodule: all positions but the root."""
        mask = torch.ones(self.size, dtype=torch.bool)
        mask[0] = False
        return mask

    def ends_tensor(self) -> torch.Tensor:
        t = self._cached.get("ends_t")
        if t is None:
            t = self._cached["ends_t"] = torch.tensor(self.ends, dtype=torch.long)
        return t

    def leaf_mask(self) -> torch.Tensor:
        t = self._cached.get("leaf")
        if t is None:
            t = self._cached["leaf"] = torch.tensor([c == 0 for c in self.n_children], dtype=torch.bool)
        return t

    def class_mask(self, predicate) -> torch.Tensor:
        """Modules whose class satisfies `predicate(cls)` (evaluated once per distinct class)."""
        lut = torch.tensor([bool(predicate(c)) for c in self.classes], dtype=torch.bool)
        return lut[self.class_ids_tensor()]

    def class_ids_tensor(self) -> torch.Tensor:
        t = self._cached.get("class_ids_t")
        if t is None:
            t = self._cached["class_ids_t"] = torch.tensor(self.class_ids, dtype=torch.long)
        return t

    def class_names(self) -> list[str]:
        """Every class name present in the model, including base classes (for suggestions)."""
        names = self._cached.get("class_names")
        if names is None:
            seen = {}
            for cls in self.classes:
                for base in cls.__mro__:
                    if base is object:
                        continue
                    seen.setdefault(base.__name__, None)
            names = self._cached["class_names"] = list(seen)
        return names

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
        weights = per_param.to(torch.float64)[self._reg_param_t()] * self._reg_sign_t()
        acc = torch.zeros(self.size + 1, dtype=torch.float64)
        acc.index_add_(0, self._reg_pos_t() + 1, weights)
        prefix = acc.cumsum(0)
        return prefix[self.ends_tensor()] - prefix[: self.size]

    def _reg_param_t(self):
        t = self._cached.get("reg_param_t")
        if t is None:
            t = self._cached["reg_param_t"] = torch.tensor(self.reg_param, dtype=torch.long)
        return t

    def _reg_pos_t(self):
        t = self._cached.get("reg_pos_t")
        if t is None:
            t = self._cached["reg_pos_t"] = torch.tensor(self.reg_pos, dtype=torch.long)
        return t

    def _reg_sign_t(self):
        t = self._cached.get("reg_sign_t")
        if t is None:
            t = self._cached["reg_sign_t"] = torch.tensor(self.reg_sign, dtype=torch.float64)
        return t

    def param_counts(self) -> torch.Tensor:
        """Distinct parameters each module uses (structural, cached)."""
        t = self._cached.get("param_counts")
        if t is None:
            t = self._cached["param_counts"] = self.subtree_sum(torch.ones(len(self.params)))
        return t

    def param_numels(self) -> torch.Tensor:
        """Parameter elements each module uses, tied weights counted once (structural, cached)."""
        t = self._cached.get("param_numels")
        if t is None:
            numels = torch.tensor([float(p.numel()) for p in self.params], dtype=torch.float64)
            t = self._cached["param_numels"] = self.subtree_sum(numels)
        return t

    def requires_grad_vector(self) -> torch.Tensor:
        """`requires_grad` of every distinct parameter, read now (never cached)."""
        return torch.tensor([p.requires_grad for p in self.params], dtype=torch.bool)

    def grad_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(parameters used, of which requires_grad) per module, read now."""
        return self.param_counts(), self.subtree_sum(self.requires_grad_vector())

    # ------------------------------------------------------------------ special modules
    def output_head_position(self) -> Optional[int]:
        """The module `model.get_output_embeddings()` returns, if the model has one."""
        if "head" not in self._cached:
            self._cached["head"] = None
            model = self.model_ref()
            getter = getattr(model, "get_output_embeddings", None)
            if callable(getter):
                try:
                    head = getter()
                except Exception:  # some models raise NotImplementedError or AttributeError here
                    head = None
                if isinstance(head, nn.Module):
                    self._cached["head"] = self.position_of_module(head) or None
        return self._cached["head"]

    @single_threaded
    def block_info(self) -> tuple[list[int], list[int], list[int]]:
        """Per module: (container position, block index, container length), or -1s outside any block.

        A block container is a ModuleList, Sequential or ModuleDict, or any module whose children
        are all named by integers. A module's block index is the first integer segment after such
        a container on its path, so in `layers.3.mlp.experts.7.up_proj` it is 3, not 7.
        """
        info = self._cached.get("blocks")
        if info is not None:
            return info
        n = self.size
        lengths: dict[int, int] = {}  # block container position → its number of numbered children
        list_types = (nn.ModuleList, nn.Sequential, nn.ModuleDict)
        modules, n_children, names, parents, ends = self.modules, self.n_children, self.names, self.parents, self.ends
        for i in range(n):
            if not n_children[i]:
                continue
            m = modules[i]
            if isinstance(m, list_types):
                digits = sum(1 for k, v in m._modules.items() if v is not None and _is_number(k))
            elif _is_number(next(iter(m._modules))):  # other modules count only when every child is numbered
                keys = [k for k, v in m._modules.items() if v is not None]
                digits = len(keys) if all(_is_number(k) for k in keys) else 0
            else:
                continue
            if digits:
                lengths[i] = digits
        container_t = torch.full((n,), -1, dtype=torch.long)
        index_t = torch.full((n,), -1, dtype=torch.long)
        length_t = torch.full((n,), -1, dtype=torch.long)
        if lengths:
            parents_t = torch.tensor(parents[1:], dtype=torch.long)
            candidates = (torch.isin(parents_t, torch.tensor(list(lengths), dtype=torch.long)).nonzero().flatten() + 1).tolist()
            # The outermost numbered block wins (layers.3.mlp.experts.7 is in block 3): in preorder, a
            # block root inside the previous one's subtree is skipped, so a slice per outer block suffices.
            covered_until = -1
            for i in candidates:
                if i < covered_until:
                    continue
                seg = names[i][names[i].rfind(".") + 1 :]
                if not _is_number(seg):
                    continue
                p = parents[i]
                container_t[i : ends[i]] = p
                index_t[i : ends[i]] = int(seg)
                length_t[i : ends[i]] = lengths[p]
                covered_until = ends[i]
        self._cached["block_tensors"] = (container_t, index_t, length_t)
        container, index, length = container_t.tolist(), index_t.tolist(), length_t.tolist()
        info = self._cached["blocks"] = (container, index, length)
        return info

    # ------------------------------------------------------------------ PEFT
    def has_tuner_layers(self) -> bool:
        """Does the model hold PEFT adapter layers (`BaseTunerLayer`), i.e. has `get_peft_model` rewritten it?"""
        found = self._cached.get("has_tuner_layers")
        if found is None:
            found = self._cached["has_tuner_layers"] = any(self._tuner_class_flags())
        return found

    def tuner_layer_count(self) -> int:
        flags = self._tuner_class_flags()
        return sum(1 for c in self.class_ids if flags[c]) if any(flags) else 0

    def _tuner_class_flags(self) -> list[bool]:
        # Per distinct class, not per module. peft is never imported for this: a model can only hold
        # tuner layers once peft (and so its tuners_utils) has been imported by someone else.
        base = getattr(sys.modules.get("peft.tuners.tuners_utils"), "BaseTunerLayer", None)
        return [base is not None and issubclass(c, base) for c in self.classes]

    # ------------------------------------------------------------------ freshness
    def is_current(self) -> bool:
        # Containers first, on every call: `del parent.child` and direct `_modules` writes fire no
        # hook, but they always change a container's child dict. Leaves can only gain children
        # through hooked paths, so only the (few) containers are compared — a few ms at 60k modules.
        if self._container_dicts != self._container_copies:  # element-wise dict ==, in C
            return False
        if self.generation == _current_generation:
            return True
        if self._structure_unchanged():
            self.generation = _current_generation
            return True
        return False

    def _structure_unchanged(self) -> bool:
        # After a registration somewhere (often in another model): leaves must still be leaves
        # (containers were compared above) and every module must hold the same parameter objects,
        # in the same order. Reads the live tree against what the build recorded, so the build
        # itself needs no per-module copies.
        known = self._param_pos
        expected = iter(self._own_params)
        for module, n_kids in zip(self.modules, self.n_children):
            if not n_kids and module._modules:
                return False
            for p in module._parameters.values():
                if p is not None and known.get(id(p), -1) != next(expected, -2):
                    return False
        return next(expected, None) is None


def _lca(parents: list[int], depth: list[int], a: int, b: int) -> int:
    while depth[a] > depth[b]:
        a = parents[a]
    while depth[b] > depth[a]:
        b = parents[b]
    while a != b:
        a, b = parents[a], parents[b]
    return a


@single_threaded
def build_index(model: nn.Module) -> ModelIndex:
    """Walk the model once, replicating `named_modules()` order and de-duplication exactly."""
    # The walk allocates ~10 objects per module; on 60k-module models the cyclic GC would run
    # dozens of full passes over them for nothing (none of them is garbage yet).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_index(model)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build_index(model: nn.Module) -> ModelIndex:
    # One tight pass: this loop *is* the cost of a first query on a 60k-module model, so locals
    # are bound and the module and parameter walks are fused (benchmarks/ measures it).
    generation = _current_generation
    names: list[str] = []
    modules: list[nn.Module] = []
    parents: list[int] = []
    n_children: list[int] = []
    depth: list[int] = []
    class_ids: list[int] = []
    classes: list[type] = []
    class_pos: dict[type, int] = {}
    # named_modules() de-duplicates with a set, i.e. by hash and ==: the same dict rule here (a
    # module of a class with value-based __eq__ equal to a listed one is skipped, subtree and all).
    position_of: dict[nn.Module, int] = {}
    position_by_id: dict[int, int] = {}  # unhashable modules, on which named_modules() itself raises
    shared_edges: list[tuple[int, int]] = []  # (parent position, position of an already-listed child)
    params: list[nn.Parameter] = []
    param_names: list[str] = []
    param_pos: dict[int, int] = {}
    regs: list[list[int]] = []  # per parameter: positions where it is registered (named_parameters order)

    add_name, add_module, add_parent, add_depth, add_class = (
        names.append, modules.append, parents.append, depth.append, class_ids.append)
    add_children = n_children.append
    own_params: list[int] = []  # each module's own parameters (indices into params), in order
    add_own = own_params.append
    container_dicts: list[dict] = []
    container_copies: list[dict] = []
    add_container_dict, add_container_copy = container_dicts.append, container_copies.append
    stack = [("", model, -1, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        name, module, parent, d = pop()
        pos = len(names)
        try:
            seen = position_of.get(module)
            if seen is None:
                position_of[module] = pos
        except Exception:  # unhashable, or an __eq__ that raises: de-duplicated by identity
            seen = position_by_id.get(id(module))
            if seen is None:
                position_by_id[id(module)] = pos
        if seen is not None:
            if modules[seen] is module:  # one module at two places: the second parent uses its parameters
                shared_edges.append((parent, seen))
            continue
        add_name(name)
        add_module(module)
        add_parent(parent)
        add_depth(d)
        cls = type(module)
        cid = class_pos.get(cls)
        if cid is None:
            cid = class_pos[cls] = len(classes)
            classes.append(cls)
        add_class(cid)
        kids = module._modules
        own = module._parameters
        if kids:
            add_container_dict(kids)
            add_container_copy(dict(kids))
        if own:
            for pname, p in own.items():
                if p is None:
                    continue
                idx = param_pos.get(id(p))
                if idx is None:
                    idx = param_pos[id(p)] = len(params)
                    params.append(p)
                    param_names.append(f"{name}.{pname}" if name else pname)
                    regs.append([pos])
                else:
                    regs[idx].append(pos)
                add_own(idx)
        if kids:
            live = [(k, v) for k, v in kids.items() if v is not None]
            add_children(len(live))
            prefix = name + "." if name else ""
            d1 = d + 1
            for k, child in reversed(live):
                push((prefix + k, child, pos, d1))
        else:
            add_children(0)

    n = len(names)
    ends = list(range(1, n + 1))
    for i in range(n - 1, 0, -1):
        p = parents[i]
        if ends[i] > ends[p]:
            ends[p] = ends[i]

    # A module listed once but held by a second parent too: that parent uses its parameters.
    for parent, child in shared_edges:
        for idx, positions in enumerate(regs):
            if any(child <= q < ends[child] for q in positions):
                regs[idx].append(parent)

    reg_pos: list[int] = []
    reg_param: list[int] = []
    reg_sign: list[int] = []
    for idx, positions in enumerate(regs):
        if len(positions) == 1:
            reg_pos.append(positions[0])
            reg_param.append(idx)
            reg_sign.append(1)
            continue
        ordered = sorted(set(positions))
        for q in ordered:
            reg_pos.append(q)
            reg_param.append(idx)
            reg_sign.append(1)
        for a, b in zip(ordered, ordered[1:]):
            reg_pos.append(_lca(parents, depth, a, b))
            reg_param.append(idx)
            reg_sign.append(-1)

    return ModelIndex(
        model_ref=weakref.ref(model),
        names=names,
        modules=modules,
        parents=parents,
        ends=ends,
        n_children=n_children,
        class_ids=class_ids,
        classes=classes,
        params=params,
        param_names=param_names,
        reg_pos=reg_pos,
        reg_param=reg_param,
        reg_sign=reg_sign,
        generation=generation,
        _container_dicts=container_dicts,
        _container_copies=container_copies,
        _position_of=position_of,
        _position_by_id=position_by_id,
        _own_params=own_params,
        _param_pos=param_pos,
    )


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
    if for_names and index is not None and index.generation == _current_generation:
        return index
    if index is None or not index.is_current():
        index = build_index(model)
        _cache[model] = index
    return index


def forget(model: nn.Module) -> None:
    """Drop the cached index of `model` (for code that edits `module._modules` directly)."""
    _cache.pop(model, None)


def _is_number(segment: str) -> bool:
    """A block number: ASCII digits only, as PEFT's layer regexes and `int()` agree on (`'¹'.isdigit()`
    is True but `int('¹')` raises; `'٣'` would make `layers.٣` block 3 beside `layers.3`)."""
    return segment.isascii() and segment.isdigit()
