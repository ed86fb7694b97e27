"""Locks: what a selector resolved to, so an upgrade that changes it is noticed.

A model revision or a transformers release can rename modules (transformers 5 fused MoE experts
into 3-D parameters; vision towers moved under `model.`). The same query then selects something
else, silently. `sel.lock()` records the selector, the names it resolved to, a hash of them and
the library versions; `check_lock(model, lock)` re-resolves the selector and reports the drift.
A lock is a plain JSON-able dict: keep it next to the training config.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from targetsel.errors import SpecError
from targetsel.model.resolution import Resolution, resolve
from targetsel.query import nodes as N
from targetsel.text.grouping import summarize_names

LOCK_FORMAT = 1


class _Lock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int
    query: str
    model_class: str
    count: int
    hash: str
    names: list[str]
    versions: dict[str, Optional[str]]
    adapted: bool = False  # taken on a model that already held PEFT adapter layers (written only then)


def names_hash(names: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out: dict[str, Optional[str]] = {}
    for package in ("targetsel", "peft", "transformers", "torch"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def lock(res: Resolution) -> dict:
    """The lock of a selection: query, resolved names, their hash, model class, library versions."""
    query = N.Selector(res.node).to_query()  # NotSerialisableError for .where(fn): it could never be re-checked
    names = list(res.names)
    res.remember()
    data = {
        "format": LOCK_FORMAT,
        "query": query,
        "model_class": res.model_class,
        "count": len(names),
        "hash": names_hash(names),
        "names": names,
        "versions": versions(),
    }
    if res.adapted:  # a selection of adapter internals, on purpose: check_lock re-resolves it on adapted models
        data["adapted"] = True
    return data


def read_lock(data: Any) -> dict:
    """A validated lock dict (raises `SpecError` naming what is wrong)."""
    if not isinstance(data, dict):
        raise SpecError(f"a lock is the dict Selection.lock() returns, got {type(data).__name__}")
    try:
        parsed = _Lock.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'lock'}: {e['msg']}" for e in exc.errors()[:5])
        raise SpecError(f"not a valid lock ({len(exc.errors())} problem(s)): {problems}") from None
    if parsed.format != LOCK_FORMAT:
        raise SpecError(f"lock format {parsed.format} is not supported (this targetsel writes format {LOCK_FORMAT})")
    if names_hash(parsed.names) != parsed.hash or len(parsed.names) != parsed.count:
        raise SpecError("the lock's names do not match its hash/count: it was edited by hand; take a new lock")
    return parsed.model_dump()


@dataclass(frozen=True)
class Drift:
    """How a lock's selector resolves now compared with when it was locked."""

    query: str
    added: tuple[str, ...]
    lost: tuple[str, ...]
    locked_versions: dict
    current_versions: dict
    note: str = ""  # why the query no longer resolves at all (e.g. an `under:` prefix that is gone)

    @property
    def ok(self) -> bool:
        return not self.added and not self.lost

    def __bool__(self) -> bool:
        return self.ok

    @property
    def changed_versions(self) -> dict[str, tuple[Optional[str], Optional[str]]]:
        keys = sorted(set(self.locked_versions) | set(self.current_versions))
        return {
            k: (self.locked_versions.get(k), self.current_versions.get(k))
            for k in keys
            if self.locked_versions.get(k) != self.current_versions.get(k)
        }

    def __str__(self) -> str:
        versions_text = ", ".join(f"{k} {a} → {b}" for k, (a, b) in self.changed_versions.items())
        if self.ok:
            return f"no drift: {self.query!r} selects the same modules" + (f" (after {versions_text})" if versions_text else "")
        lines = [f"drift: {self.query!r} now selects {len(self.added)} module(s) more and {len(self.lost)} fewer"]
        if self.added:
            lines.append(f"  added ({len(self.added)}): {summarize_names(list(self.added))}")
        if self.lost:
            lines.append(f"  lost ({len(self.lost)}): {summarize_names(list(self.lost))}")
        if self.note:
            lines.append(f"  the query no longer resolves: {self.note}")
        if versions_text:
            lines.append(f"  versions changed since the lock: {versions_text}")
        return "\n".join(lines)


def check_lock(model, lock_data: dict) -> Drift:
    """Re-resolve a lock's selector on `model` and report names added or lost since the lock."""
    from targetsel.errors import ModelRewrittenError, UnknownNameError
    from targetsel.model.evaluate import check_against_model
    from targetsel.model.index import get_index
    from targetsel.query.parser import parse

    data = read_lock(lock_data)
    index = get_index(model, for_names=True)  # NotAModuleError first
    if index.has_tuner_layers() and not data["adapted"]:
        raise ModelRewrittenError(
            f"check_lock: {type(model).__name__} holds {index.tuner_layer_count()} PEFT adapter layer(s) — get_peft_model "
            f"rewrote it — but the lock of {data['query']!r} ({data['count']} module(s) of {data['model_class']}) was taken "
            "before injection: re-resolving it here would answer for adapter internals (base_layer, lora_A, …), not for "
            "the model it was taken on. Check the lock on the base model before get_peft_model, or compare what PEFT "
            "wrapped with it: audit(peft_model, lock)."
        )
    note = ""
    try:
        node = parse(data["query"]).root
        check_against_model(node, index)
        now = resolve(model, node).names
    except UnknownNameError as exc:  # a type or module the query names is gone: everything is lost
        now, note = [], str(exc).splitlines()[0]
    before = data["names"]
    had, has = set(before), set(now)
    return Drift(
        query=data["query"],
        added=tuple(n for n in now if n not in had),
        lost=tuple(n for n in before if n not in has),
        locked_versions=dict(data["versions"]),
        current_versions=versions(),
        note=note,
    )
