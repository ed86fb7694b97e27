"""`TargetselCallback`: at train start, are the adapters on the live model the intended ones?

A trainer can change the adapted set between the config you wrote and the first step: it may
rewrite the targets (see `bridge/exports`), add `modules_to_save` or trainable-token layers on its
own (TRL's `SFTTrainer` does when a cloned chat template adds tokens), or get a different model
than the one you selected on. The callback audits the model the trainer holds when training
begins (`targetsel.audit`), prints the grouped result once (on the main process only) and raises
`AuditError` — or, with `strict=False`, warns `TargetselWarning` — when the adapted set differs.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, TextIO

from torch import nn
from transformers import TrainerCallback

from targetsel.bridge.wrapped import inner_model
from targetsel.errors import AuditError, TargetselError, TargetselWarning
from targetsel.model.ranks import print_once, warn_once
from targetsel.model.wrappers import class_name, user_name


class TargetselCallback(TrainerCallback):
    """Audit the live model at `on_train_begin` against what was selected.

    `selection`: what `target_modules` should adapt — the `Selection` you patched or exported (its
    names as resolved then), its `resolved()` snapshot, its `lock()`, or a list of names;
    `parameters`: the same for `target_parameters` (a `ParameterSelection`, snapshot or names).
    `expect_saved`: module names you mean to train in full (`modules_to_save`) or give trainable
    tokens; anything else so wrapped — by the config or by the trainer on its own — is a mismatch.
    `strict=True` raises `AuditError`, `strict=False` warns. `stream`: where the table goes (stdout).

    >>> trainer = SFTTrainer(model, ..., peft_config=patch(LoraConfig(r=16), sel),
    ...                      callbacks=[TargetselCallback(sel)])
    """

    def __init__(self, selection: Any = None, *, parameters: Any = None, expect_saved: Iterable[str] = (),
                 strict: bool = True, stream: Optional[TextIO] = None):
        if selection is None and parameters is None:
            raise TargetselError("TargetselCallback needs what was selected: TargetselCallback(sel), "
                                 "TargetselCallback(sel.resolved()), a lock, or parameters=psel")
        if isinstance(expect_saved, str) or not all(isinstance(n, str) for n in expect_saved):
            raise TargetselError(f"TargetselCallback(expect_saved=...) takes a list of module names, got {expect_saved!r}")
        if not isinstance(strict, bool):
            raise TargetselError(f"TargetselCallback(strict=...) is True (raise) or False (warn), got {strict!r}")
        self.selection = selection
        self.parameters = parameters
        self.expect_saved = tuple(expect_saved)
        self.strict = strict
        self.stream = stream
        self.audit = None   # the Audit of the last train start
        self.extra: dict[str, tuple[str, ...]] = {}  # "saved" / "tokens" wrapped but not expected
        self.report = ""
        self._shown = False

    # ------------------------------------------------------------------ TrainerCallback
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise TargetselError("TargetselCallback got no model at train start; pass it to a transformers Trainer")
        self.check(model)
        return control

    # ------------------------------------------------------------------ the check
    def check(self, model: nn.Module):
        """Audit `model` now: print the table once (main process), then raise or warn on a mismatch."""
        from targetsel.bridge.audit import audit

        self.audit = audit(model, self.selection, parameters=self.parameters)
        saved, tokens = _auxiliary(model)
        expected = set(self.expect_saved)
        self.extra = {key: tuple(n for n in names if n not in expected)
                      for key, names in (("saved", saved), ("tokens", tokens))}
        self.extra = {k: v for k, v in self.extra.items() if v}
        ok = self.audit.ok and not self.extra
        self.report = _table(model, self.audit, self.extra)
        if not self._shown:  # once, on the main process (rank 0 under torch.distributed)
            self._shown = print_once(self.report, file=self.stream)
        if not ok:
            message = ("the adapters at train start are not the selected ones:\n" + self.report
                       + "\nFix the config the trainer builds (targetsel export MODEL QUERY --to TRAINER), or pass "
                       "expect_saved=[...] for modules you mean to train in full.")
            if self.strict:
                raise AuditError(message, self.report)
            warn_once(message, TargetselWarning, stacklevel=2)  # on every rank, printed on rank 0
        return self.audit


def _auxiliary(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules wrapped by modules_to_save, modules given trainable-token layers), base-model names."""
    from peft import PeftModel
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    model = inner_model(model)  # FSDP1 / checkpoint wrappers around the PeftModel
    base = model.base_model.model if isinstance(model, PeftModel) else model
    saved, tokens = [], []
    for name, module in base.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            saved.append(user_name(name))
        elif isinstance(module, TrainableTokensWrapper):
            tokens.append(user_name(name))
    return tuple(saved), tuple(tokens)


def _table(model: nn.Module, result, extra: dict) -> str:
    """One row per group of names: what it is, how many, the group (a glob you can paste back)."""
    from targetsel.text.grouping import group_names, summarize_names

    wrapped = set(result.wrapped) | set(result.wrapped_parameters)
    rows = [
        ("adapted", [n for n in result.expected if n in wrapped]),
        ("adapted", [n for n in result.expected_parameters if n in wrapped]),
        ("MISSING", list(result.missing) + list(result.missing_parameters)),
        ("UNEXPECTED", list(result.unexpected) + list(result.unexpected_parameters)),
        ("SAVED (modules_to_save, not selected)", list(extra.get("saved", ()))),
        ("TOKENS (trainable tokens, not selected)", list(extra.get("tokens", ()))),
    ]
    width = max(len(label) for label, names in rows if names) if any(names for _, names in rows) else 7
    lines = [f"targetsel: adapters at train start on {class_name(model)}"]  # the class the user built
    for label, names in rows:
        for group in group_names(names) if names else ():
            lines.append(f"  {label:<{width}}  {len(group):>5}  {group.pattern}")
    if not any(names for _, names in rows):
        lines.append("  nothing is adapted and nothing was selected")
    lines.append(str(result))
    if extra:
        parts = [f"{summarize_names(list(extra['saved']), limit=3)} in full (modules_to_save)"] if extra.get("saved") else []
        if extra.get("tokens"):
            parts.append(f"token rows of {summarize_names(list(extra['tokens']), limit=3)} (trainable_token_indices)")
        count = sum(len(v) for v in extra.values())
        lines.append(f"but {count} module(s) that were not selected are trained too: {'; '.join(parts)}")
    return "\n".join(lines)
