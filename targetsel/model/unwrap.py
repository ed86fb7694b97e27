"""`unwrap()`: the fields of one walk (model/walk.py) as the plain model the wrappers were put around.

FSDP1 and activation-checkpoint wrappers are left out with their name segments, FSDP1's flat
parameters are split back into the parameters they hold, FSDP2's dynamic classes become the user's.
What each wrapper changes, and why the index sees it so: model/wrappers.py.
"""

from __future__ import annotations

from typing import Optional

from targetsel.model.wrappers import (FlatEntry, PeftView, is_flat_parameter, record_full_shapes, record_original,
                                      user_class, wrapper_segment)

def unwrap(fields: dict) -> dict:
    """The fields of a walk (model/walk.py) as the user's model: FSDP1 and checkpoint wrappers left out,
    flat parameters split back into their originals, FSDP2 classes replaced by the user's.

    Returns `fields` itself when the model holds none of them (one look at its distinct classes).
    The freshness fields (`_container_*`, `_own_params`, `_param_pos`) stay those of the walk: they
    compare the live tree with what was walked, wrappers and flat parameters included.
    """
    classes = fields["classes"]
    wrapping = [wrapper_segment(c) for c in classes]
    if not any(wrapping) and all(user_class(c) is c for c in classes):
        return fields
    out = dict(fields)
    _user_classes(out)
    if any(wrapping):
        _drop_wrappers(out, wrapping)
    return out


def _user_classes(out: dict) -> None:
    new_classes: list[type] = []
    slot: dict[type, int] = {}
    remap = []
    for cls in out["classes"]:
        user = user_class(cls)
        if user not in slot:
            slot[user] = len(new_classes)
            new_classes.append(user)
        remap.append(slot[user])
    out["classes"] = new_classes
    out["class_ids"] = [remap[c] for c in out["class_ids"]]


def _drop_wrappers(out: dict, wrapping: list[Optional[str]]) -> None:
    # Positions only disappear, so pre-order is kept: old position → new position, a dropped
    # wrapper mapping to the module it wraps (the next position, or the next one's, for nested wrappers).
    names, modules, parents, class_ids = out["names"], out["modules"], out["parents"], out["class_ids"]
    n = len(names)
    dropped = [False] * n
    for i in range(n):
        segment = wrapping[class_ids[i]]
        if segment and i + 1 < n and parents[i + 1] == i and _key(names, i + 1, i) == segment \
                and not any(p is not None for p in modules[i]._parameters.values()):
            dropped[i] = True
    new_of = [-1] * n
    kept = [i for i in range(n) if not dropped[i]]
    for new, old in enumerate(kept):
        new_of[old] = new
    for old in range(n - 1, -1, -1):
        if dropped[old]:
            new_of[old] = new_of[old + 1]

    user = [""] * n  # every old position's name on the plain model
    for i in range(1, n):
        p = parents[i]
        key = _key(names, i, p)
        user[i] = user[p] if dropped[p] and key == wrapping[class_ids[p]] else (f"{user[p]}.{key}" if user[p] else key)

    new_parents = []
    for old in kept:
        p = parents[old]
        while p >= 0 and dropped[p]:
            p = parents[p]
        new_parents.append(new_of[p] if p >= 0 else -1)
    ends = list(range(1, len(kept) + 1))
    for i in range(len(kept) - 1, 0, -1):
        ends[new_parents[i]] = max(ends[new_parents[i]], ends[i])

    _split_parameters(out, names, user, new_of, new_parents)
    out["_cached"] = {**out.get("_cached", {}), "peft_view": PeftView(list(names), [new_of[i] if not dropped[i] else -1
                                                                                     for i in range(n)])}
    out["names"] = [user[i] for i in kept]
    out["modules"] = [modules[i] for i in kept]
    out["parents"] = new_parents
    out["ends"] = ends
    out["n_children"] = [out["n_children"][i] for i in kept]
    out["class_ids"] = [class_ids[i] for i in kept]
    used = sorted(set(out["class_ids"]))  # the wrapper classes are gone
    slot = {c: k for k, c in enumerate(used)}
    out["classes"] = [out["classes"][c] for c in used]
    out["class_ids"] = [slot[c] for c in out["class_ids"]]
    out["_position_of"] = {m: new_of[p] for m, p in out["_position_of"].items()}
    out["_position_by_id"] = {k: new_of[p] for k, p in out["_position_by_id"].items()}


def _key(names: list[str], i: int, parent: int) -> str:
    return names[i][len(names[parent]) + 1:] if names[parent] else names[i]


def _split_parameters(out: dict, names, user, new_of, new_parents) -> None:
    """Parameters and their signed registrations on the new positions; a flat parameter
    (use_orig_params=False) becomes one entry per original parameter, registered where it was."""
    regs: dict[int, list[int]] = {}
    for pos, idx, sign in zip(out["reg_pos"], out["reg_param"], out["reg_sign"]):
        if sign > 0:
            regs.setdefault(idx, []).append(pos)
    position_of, by_id = out["_position_of"], out["_position_by_id"]

    def where(module) -> Optional[int]:
        try:
            pos = position_of.get(module)
        except Exception:  # an unhashable module: listed by identity
            pos = None
        return pos if pos is not None else by_id.get(id(module))

    params, param_names, positions = [], [], []
    for idx, p in enumerate(out["params"]):
        old = regs.get(idx, [0])
        if is_flat_parameter(p):
            entries: dict[tuple[int, str], int] = {}  # (id(module), name) → index in params
            for info, shape in zip(p._param_infos, p._shapes):
                pos = where(info.module)
                if pos is None:
                    continue
                entries[(id(info.module), info.param_name)] = len(params)
                params.append(FlatEntry(p, shape))
                record_original(info.module, info.param_name, params[-1])
                param_names.append(f"{user[pos]}.{info.param_name}" if user[pos] else info.param_name)
                positions.append([new_of[pos]])
            for info in getattr(p, "_shared_param_infos", ()) or ():
                pos, primary = where(info.module), entries.get((id(info.prim_module), info.prim_param_name))
                if pos is not None and primary is not None:
                    positions[primary].append(new_of[pos])
                    record_original(info.module, info.param_name, params[primary])
            continue
        first = old[0]
        pname = out["param_names"][idx][len(names[first]) + 1:] if names[first] else out["param_names"][idx]
        params.append(p)
        param_names.append(f"{user[first]}.{pname}" if user[first] else pname)
        positions.append([new_of[q] for q in old])
    for m in out["modules"]:  # use_orig_params=True: the originals' full shapes, from their flat parameter
        flat = getattr(getattr(m, "_handle", None), "flat_param", None) if wrapper_segment(type(m)) else None
        if flat is not None and getattr(flat, "_params", None):
            record_full_shapes(flat._params, flat._shapes)
    out["params"], out["param_names"] = params, param_names
    out["reg_pos"], out["reg_param"], out["reg_sign"] = _signed(positions, new_parents)


def _signed(positions: list[list[int]], parents: list[int]) -> tuple[list[int], list[int], list[int]]:
    """+1 at each distinct registering position of a parameter, -1 at the lowest common ancestor of
    each consecutive pair (model/walk.py's rule), so subtree sums count a shared parameter once."""
    depth = [0] * len(parents)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
    reg_pos, reg_param, reg_sign = [], [], []
    for idx, where in enumerate(positions):
        ordered = sorted(set(where))
        for q in ordered:
            reg_pos.append(q), reg_param.append(idx), reg_sign.append(1)
        for a, b in zip(ordered, ordered[1:]):
            while depth[a] > depth[b]:
                a = parents[a]
            while depth[b] > depth[a]:
                b = parents[b]
            while a != b:
                a, b = parents[a], parents[b]
            reg_pos.append(a), reg_param.append(idx), reg_sign.append(-1)
    return reg_pos, reg_param, reg_sign
