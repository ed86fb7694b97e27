"""One pass over a model: the flat pre-order arrays a `ModelIndex` is made of (model/index.py).

Order and de-duplication are exactly `named_modules()`' and `named_parameters()`'; a tied or shared
parameter gets one signed registration per place it is used, so subtree sums count it once.
"""

from __future__ import annotations

import gc

from torch import nn

from targetsel.model.hooks import current_generation


def _lca(parents: list[int], a: int, b: int) -> int:
    depth_a, depth_b = _depth(parents, a), _depth(parents, b)
    while depth_a > depth_b:
        a, depth_a = parents[a], depth_a - 1
    while depth_b > depth_a:
        b, depth_b = parents[b], depth_b - 1
    while a != b:
        a, b = parents[a], parents[b]
    return a


def _depth(parents: list[int], pos: int) -> int:
    depth = 0
    while parents[pos] >= 0:
        pos, depth = parents[pos], depth + 1
    return depth


def walk(model: nn.Module) -> dict:
    """Walk the model once, replicating `named_modules()` order and de-duplication exactly: the
    fields of a `ModelIndex` (all but `model_ref`), by name."""
    # The walk allocates ~10 objects per module; on 60k-module models the cyclic GC would run
    # dozens of full passes over them for nothing (none of them is garbage yet).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _walk(model)
    finally:
        if gc_was_enabled:
            gc.enable()


def _walk(model: nn.Module) -> dict:
    # One piece on purpose. One tight pass: this loop *is* the cost of a first query on a 60k-module model, so locals
    # are bound, the module and parameter walks are fused, and per-module work is kept to what the
    # index needs (benchmarks/ measures it against a bare named_modules() + named_parameters()).
    generation = current_generation()
    names: list[str] = []
    modules: list[nn.Module] = []
    parents: list[int] = []
    n_children: list[int] = []
    class_ids: list[int] = []
    classes: list[type] = []
    class_pos: dict[type, int] = {}
    # named_modules() de-duplicates with a set, i.e. by hash and ==: the same dict rule here (a
    # module of a class with value-based __eq__ equal to a listed one is skipped, subtree and all).
    position_of: dict[nn.Module, int] = {}
    position_by_id: dict[int, int] = {}  # unhashable modules, on which named_modules() itself raises
    shared_edges: list[tuple[int, int]] = []  # (parent position, position of an already-listed child)
    met_listed = False  # did any registration point at a module already listed (shared, or equal to one)?
    params: list[nn.Parameter] = []
    param_names: list[str] = []
    param_pos: dict[int, int] = {}
    first_reg: list[int] = []  # per parameter: the position registering it first (named_parameters order)
    more_regs: dict[int, list[int]] = {}  # parameter → all its registering positions, when more than one

    add_name, add_module, add_parent, add_class = names.append, modules.append, parents.append, class_ids.append
    add_children = n_children.append
    own_params: list[int] = []  # each module's own parameters (indices into params), in order
    add_own = own_params.append
    container_dicts: list[dict] = []
    container_copies: list[dict] = []
    add_container_dict, add_container_copy = container_dicts.append, container_copies.append
    stack = [("", model, -1)]
    pop, push = stack.pop, stack.append
    pos = -1
    while stack:
        name, module, parent = pop()
        try:
            seen = position_of.get(module)
            if seen is None:
                position_of[module] = pos + 1
        except Exception:  # unhashable, or an __eq__ that raises: de-duplicated by identity
            seen = position_by_id.get(id(module))
            if seen is None:
                position_by_id[id(module)] = pos + 1
        if seen is not None:
            met_listed = True
            if modules[seen] is module:  # one module at two places: the second parent uses its parameters
                shared_edges.append((parent, seen))
            continue
        pos += 1
        add_name(name)
        add_module(module)
        add_parent(parent)
        cls = type(module)
        cid = class_pos.get(cls)
        if cid is None:
            cid = class_pos[cls] = len(classes)
            classes.append(cls)
        add_class(cid)
        own = module._parameters
        if own:
            for pname, p in own.items():
                if p is None:
                    continue
                idx = param_pos.get(id(p))
                if idx is None:
                    idx = param_pos[id(p)] = len(params)
                    params.append(p)
                    param_names.append(f"{name}.{pname}" if name else pname)
                    first_reg.append(pos)
                else:
                    more_regs.setdefault(idx, [first_reg[idx]]).append(pos)
                add_own(idx)
        kids = module._modules
        if kids:
            add_container_dict(kids)
            add_container_copy(dict(kids))
            prefix = name + "." if name else ""
            gone = 0
            for k, child in reversed(kids.items()):
                if child is None:
                    gone += 1
                    continue
                push((prefix + k, child, pos))
            add_children(len(kids) - gone)
        else:
            add_children(0)

    n = len(names)
    ends = list(range(1, n + 1))
    for i in range(n - 1, 0, -1):
        p = parents[i]
        if ends[i] > ends[p]:
            ends[p] = ends[i]

    if shared_edges:
        # A module listed once but held by a second parent too: that parent uses its parameters.
        regs = [more_regs.get(idx) or [first] for idx, first in enumerate(first_reg)]
        for parent, child in shared_edges:
            for idx, positions in enumerate(regs):
                if any(child <= q < ends[child] for q in positions):
                    regs[idx].append(parent)
        more_regs = {idx: positions for idx, positions in enumerate(regs) if len(positions) > 1}

    if more_regs:
        reg_pos, reg_param, reg_sign = _registrations(parents, first_reg, more_regs)
    else:  # every parameter registered once (no tied weights): one +1 registration each
        reg_pos, reg_param, reg_sign = first_reg, list(range(len(first_reg))), [1] * len(first_reg)

    return dict(
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
        _container_lens=list(map(len, container_copies)),
        _position_of=position_of,
        _position_by_id=position_by_id,
        _own_params=own_params,
        _param_pos=param_pos,
        _met_listed=met_listed,
    )


def _registrations(parents: list[int], first_reg: list[int], more_regs: dict[int, list[int]]):
    """Signed registrations, per parameter in order: +1 at each distinct registering position, and
    -1 at the lowest common ancestor of each consecutive pair, so subtree sums count a tied
    parameter once."""
    reg_pos: list[int] = []
    reg_param: list[int] = []
    reg_sign: list[int] = []
    for idx, first in enumerate(first_reg):
        positions = more_regs.get(idx)
        if positions is None:
            reg_pos.append(first)
            reg_param.append(idx)
            reg_sign.append(1)
            continue
        ordered = sorted(set(positions))
        for q in ordered:
            reg_pos.append(q)
            reg_param.append(idx)
            reg_sign.append(1)
        for a, b in zip(ordered, ordered[1:]):
            reg_pos.append(_lca(parents, a, b))
            reg_param.append(idx)
            reg_sign.append(-1)
    return reg_pos, reg_param, reg_sign
