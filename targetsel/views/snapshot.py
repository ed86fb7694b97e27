"""`Resolved`: a selection's answer frozen as plain data — names, query, model class — for logs and audits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from targetsel.errors import SpecError
from targetsel.model.resolution import Resolution


@dataclass(frozen=True)
class Resolved:
    """What a selection resolved to, frozen: the names in model order and where they came from.

    `Selection.resolved()` gives `kind="modules"`; `ParameterSelection.resolved()` gives
    `kind="parameters"` (names are `module.param`, `pattern` the parameter regex). `module_count` is
    the number of named modules the model had. Picklable and hashable; `to_dict()` is JSON-able and
    `Resolved.from_dict()` reads it back. `audit(peft_model, resolved)` takes it as what was selected.
    """

    query: str
    names: tuple[str, ...]
    model_class: str
    module_count: int
    kind: str = "modules"
    pattern: Optional[str] = None

    KINDS = ("modules", "parameters")

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))  # a list given by hand stays frozen too

    @property
    def count(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        """Plain JSON types: `json.dumps(r.to_dict())` works, `Resolved.from_dict` reads it back."""
        return {
            "kind": self.kind,
            "query": self.query,
            "pattern": self.pattern,
            "model_class": self.model_class,
            "module_count": self.module_count,
            "count": self.count,
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Resolved":
        """The inverse of `to_dict()`; raises `SpecError` naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise SpecError(f"Resolved.from_dict takes the dict Resolved.to_dict() returns, got {type(data).__name__}")
        fields = {"kind": str, "query": str, "pattern": (str, type(None)), "model_class": str, "module_count": int,
                  "count": int, "names": list}
        missing = [f for f in fields if f not in data]
        extra = sorted(set(data) - set(fields))
        if missing or extra:
            raise SpecError(
                f"not a Resolved dict: {'missing ' + ', '.join(missing) if missing else ''}"
                f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(extra) if extra else ''}"
            )
        for key, kind in fields.items():
            value = data[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise SpecError(f"Resolved.from_dict: {key!r} has the wrong type ({type(value).__name__})")
        if data["kind"] not in cls.KINDS:
            raise SpecError(f"Resolved.from_dict: kind is 'modules' or 'parameters', got {data['kind']!r}")
        if not all(isinstance(n, str) for n in data["names"]) or data["count"] != len(data["names"]):
            raise SpecError("Resolved.from_dict: names must be strings, as many as count says; take a new snapshot")
        return cls(query=data["query"], names=tuple(data["names"]), model_class=data["model_class"],
                   module_count=data["module_count"], kind=data["kind"], pattern=data["pattern"])

    def __repr__(self) -> str:
        from targetsel.text.grouping import summarize_names

        shown = summarize_names(list(self.names), limit=4) if self.names else "nothing"
        if self.kind == "parameters":
            source = f"{self.query!r}.parameters({'' if self.pattern is None else repr(self.pattern)})"
            return f"Resolved({source} → {self.count} parameter(s) in {self.model_class} ({self.module_count} modules): {shown})"
        return f"Resolved({self.query!r} → {self.count} of the {self.module_count} modules of {self.model_class}: {shown})"


def snapshot(res: Resolution, *, names=None, kind: str = "modules", pattern: Optional[str] = None) -> Resolved:
    """The `Resolved` of a resolution (or of parameter names found inside it), remembered for `audit()`."""
    return Resolved(query=res.query, names=tuple(res.names if names is None else names), model_class=res.model_class,
                    module_count=res.module_count, kind=kind, pattern=pattern)
