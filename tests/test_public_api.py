"""The public API: `targetsel.__all__` is pinned, and every name is the documented object — never a
submodule that shadows it — in any import order, including after patch() / check() / lock() /
audit() ran (regression: `from targetsel import audit` gave the module `targetsel.bridge.audit` once
patch() had imported it, and the README's patch → get_peft_model → audit flow raised TypeError).
Every name is served lazily, so `import targetsel` (and `targetsel --help`) imports no torch."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import types

import pytest

import targetsel as ts

# name → the module that defines it
PUBLIC = {
    "Audit": "targetsel.bridge.audit",
    "audit": "targetsel.bridge.audit",
    "Drift": "targetsel.views.lock",
    "check_lock": "targetsel.views.lock",
    "Explanation": "targetsel.views.explain",
    "Finding": "targetsel.bridge.checks",
    "check": "targetsel.bridge.checks",
    "check_adapter": "targetsel.bridge.adapter_check",
    "AdapterReport": "targetsel.bridge.adapter_check",
    "ParameterSelection": "targetsel.views.parameters",
    "Resolved": "targetsel.selection",
    "Selection": "targetsel.selection",
    "select": "targetsel.selection",
    "Selector": "targetsel.query.nodes",
    "load_spec": "targetsel.query.parser",
    "parse": "targetsel.query.parser",
    "patch": "targetsel.bridge.patch",
    "verify": "targetsel.bridge.verify",
    "dry_run": "targetsel.bridge.verify",
    "Injection": "targetsel.bridge.injection",
    "TargetselCallback": "targetsel.bridge.callback",
    **{
        name: "targetsel.errors"
        for name in (
            "AuditError", "ExportError", "AdapterFileError",
            "ConfigError", "EmptySelectionError", "LayerSpecError", "ModelLoadError", "ModelMismatchError",
            "ModelRewrittenError", "ModulesToSaveOverlapError", "NestedTargetsError", "NotAModuleError",
            "NotSerialisableError", "PatternError", "PeftRejectionError", "PreflightError", "QuerySyntaxError",
            "RegexTimeoutError", "SelectionError", "SpecError", "TargetselError", "TargetselWarning",
            "UnknownNameError",
        )
    },
}


def _submodule_names() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(ts.__path__)} - {"__main__"}


def test_all_is_pinned():
    assert len(ts.__all__) == len(set(ts.__all__))
    assert sorted(ts.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_name_is_the_object_its_module_defines(name):
    value = getattr(ts, name)
    assert not isinstance(value, types.ModuleType)
    assert value is getattr(importlib.import_module(PUBLIC[name]), name)
    assert name in dir(ts)


def test_every_error_class_is_exported():
    errors = importlib.import_module("targetsel.errors")
    defined = {n for n, v in vars(errors).items() if isinstance(v, type) and v.__module__ == errors.__name__}
    assert defined <= set(ts.__all__)


def test_every_public_name_is_lazy_and_none_is_a_submodule_name():
    # `import targetsel` imports no torch: every public name is served by the module __getattr__.
    # Importing a submodule sets the package attribute of its name, so a public name equal to a
    # top-level submodule's would be shadowed by the module once anything imported it.
    assert set(ts._LAZY) == set(ts.__all__)
    assert _submodule_names() >= {"errors", "version", "selection", "demo", "cli", "text", "query", "model", "views", "bridge"}
    assert not set(ts.__all__) & _submodule_names()


# (what runs first, modules that must not be imported after it) — in a fresh interpreter
IMPORT_COSTS = [
    ("import targetsel", ("torch", "peft", "transformers", "pydantic", "rich", "targetsel.selection")),
    ("import targetsel; targetsel.__version__; dir(targetsel)", ("torch", "peft", "transformers")),
    ("from targetsel import TargetselError, QuerySyntaxError, ModelLoadError", ("torch", "peft", "transformers")),
    ("from targetsel import select", ("peft", "transformers")),
]


@pytest.mark.parametrize("code, absent", IMPORT_COSTS, ids=[c for c, _ in IMPORT_COSTS])
def test_importing_targetsel_does_not_import_torch(code, absent):
    probe = f"import sys\n{code}\nprint(sorted(m for m in {list(absent)!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_version_is_served_without_importing_anything_heavy():
    from targetsel.version import __version__

    assert ts.__version__ == __version__ and isinstance(__version__, str)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match=r"^module 'targetsel' has no attribute 'audits'$"):
        ts.audits  # noqa: B018


# What runs in a fresh interpreter before every public name is checked. Each ends with the names
# resolved both ways: `targetsel.<name>` and `from targetsel import <name>`.
SETUP = """
import warnings; warnings.simplefilter("ignore")
import torch
from torch import nn
from peft import LoraConfig, get_peft_model
with torch.device("meta"):
    model = nn.Module()
    model.block = nn.Module()
    model.block.q_proj = nn.Linear(4, 4)
    model.block.v_proj = nn.Linear(4, 4)
"""

SCENARIOS = {
    "fresh import": "import targetsel",
    "submodule imported first": "import targetsel.bridge.audit, targetsel.bridge.patch, targetsel.bridge.verify, targetsel.bridge.checks",
    "from-import of the submodule": "from targetsel.bridge.audit import audit as fn; from targetsel import select",
    "every submodule imported": (
        "import importlib, pkgutil, targetsel\n"
        "for m in pkgutil.iter_modules(targetsel.__path__):\n"
        "    if m.name != '__main__':  # running it would start the CLI\n"
        "        importlib.import_module('targetsel.' + m.name)"
    ),
    "every lazy name, then every submodule": (
        "import importlib, pkgutil, targetsel\n"
        "[getattr(targetsel, n) for n in targetsel._LAZY]\n"
        "for m in pkgutil.iter_modules(targetsel.__path__):\n"
        "    if m.name != '__main__':  # running it would start the CLI\n"
        "        importlib.import_module('targetsel.' + m.name)"
    ),
    "after patch()": "from targetsel import patch, select\nconfig = patch(LoraConfig(r=2), select(model, 'linear'))",
    "after check()": "import targetsel\ntargetsel.check(model, targetsel.select(model, 'linear'))",
    "after lock() and check_lock()": (
        "from targetsel import select, check_lock\ncheck_lock(model, select(model, 'linear').lock())"
    ),
    "README flow: patch, get_peft_model, audit": (
        "from targetsel import patch, select\n"
        "sel = select(model, 'linear & glob:**.q_proj')\n"
        "peft_model = get_peft_model(model, patch(LoraConfig(r=2), sel))\n"
        "from targetsel import audit\n"
        "assert audit(peft_model, sel).ok, audit(peft_model, sel)"
    ),
}

CHECK = """
import importlib, json, types
import targetsel
bad = {}
for name, where in json.loads(PUBLIC).items():
    namespace = {}
    exec(f"from targetsel import {name} as value", namespace)
    for how, value in (("attribute", getattr(targetsel, name)), ("from-import", namespace["value"])):
        if isinstance(value, types.ModuleType) or value is not getattr(importlib.import_module(where), name):
            bad[f"{name} ({how})"] = repr(value)
print(json.dumps(bad))
"""


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_public_names_in_a_fresh_interpreter(scenario):
    code = SETUP + SCENARIOS[scenario] + "\n" + f"PUBLIC = {json.dumps(json.dumps(PUBLIC))}\n" + CHECK
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
