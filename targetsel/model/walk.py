"""One pass over a model: the flat pre-order arrays a `ModelIndex` is made of (model/index.py).

Order and de-duplication are exactly `named_modules()`' and `named_parameters()`'; a tied or shared
parameter gets one signed registration per place it is used, so subtree sums count it once.
"""

from __future__ import annotations

import gc

from torch import nn

from targetsel.model.hooks import current_generation


def _lca(parents: list[int], depth: list[int], a: int, b: int) -> int:
    while depth[a] > depth[b]:
        a = parents[a]
    while depth[b] > depth[a]:
        b = parents[b]
    while a != b:
        a, b = parents[a], parents[b]
    return a


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
    # One tight pass: this loop *is* the cost of a first query on a 60k-module model, so locals
    # are bound and the module and parameter walks are fused (benchmarks/ measures it).
    generation = current_generation()
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
    )
