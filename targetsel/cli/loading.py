"""Build the model a command-line user names, without ever loading weights.

`MODEL` on the command line is one of:

- `demo` — the embedded small VLM (`targetsel.demo`), so the incidents can be seen offline;
- a local directory holding `config.json`, or a `config.json` path — built with transformers on
  the meta device as the class its `architectures` field names (see `cli/hf.py`);
- `package.module:factory` — a callable returning an `nn.Module` (or a module instance);
- a Hugging Face hub id — only its config is fetched; offline, that fails at once with one line.

torch is imported only when a model is built and transformers only when a config has to be read,
so `targetsel --help` never pays for either.
"""

from __future__ import annotations

import importlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from targetsel.cli.files import read_json  # noqa: F401 - part of this module's interface
from targetsel.errors import ModelLoadError

# huggingface_hub's repo-id rule (`validate_repo_id`): one or two parts of word characters, `-` and
# `.`, each starting and ending with a word character, no `--` or `..`, at most 96 characters.
_HUB_PART = re.compile(r"\w(?:[\w.-]*\w)?", re.ASCII)


def load_model(spec: str, model_class: Optional[str] = None, *, trust_remote_code: bool = False, quantize: bool = True):
    """The `nn.Module` a command-line MODEL argument names, built on the meta device where possible.

    A config with a `quantization_config` is built with the quantized layers its checkpoint loads with
    (`cli/quantized_loading.py`); `quantize=False` builds the float model."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("MODEL is empty; pass `demo`, a directory or config.json, a hub id, or package.module:factory")
    spec = spec.strip()
    if spec == "demo":
        return build_demo()
    path = Path(spec).expanduser()
    if path.exists():
        from targetsel.cli.hf import from_config_path

        from targetsel.cli.quantized_loading import apply

        return apply(from_config_path(path, model_class, trust_remote_code=trust_remote_code), spec, quantize)
    if ":" in spec and not _looks_like_path(spec):
        return _from_factory(spec)
    if _looks_like_path(spec):
        raise ModelLoadError(f"no such file or directory: {spec!r} (relative paths start at {os.getcwd()!r})")
    if not looks_like_hub_id(spec):
        raise ModelLoadError(
            f"cannot tell what MODEL {spec!r} is: pass `demo`, a directory holding config.json, a config.json "
            "path, a Hugging Face hub id such as Qwen/Qwen2.5-0.5B, or package.module:factory"
        )
    from targetsel.cli.hf import from_hub

    # `org/name` that is not here may still have been meant as a local directory: the error says both.
    from targetsel.cli.quantized_loading import apply

    return apply(from_hub(spec, model_class, trust_remote_code=trust_remote_code, maybe_local="/" in spec), spec, quantize)


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (
        len(spec) <= 96 and 1 <= len(parts) <= 2 and "--" not in spec and ".." not in spec
        and all(_HUB_PART.fullmatch(p) for p in parts)
    )


def _looks_like_path(spec: str) -> bool:
    """What only a file-system path can be: `./x`, `../x`, `/x`, `~/x`, `a/b/c`, `x.json`, `C:\\x`."""
    return (
        spec.startswith((".", "/", "~", os.sep)) or "\\" in spec or spec.count("/") >= 2
        or spec.lower().endswith(".json") or bool(re.match(r"[A-Za-z]:[\\/]", spec))
    )


def build_demo():
    from targetsel.demo import build_demo_model

    with skip_init():
        return build_demo_model()


# torch.nn.init's in-place initialisers. On the meta device they have nothing to fill, but
# `normal_` on a meta tensor runs a Python reference implementation that imports torch._dynamo
# (2–3 s, most of what `targetsel show demo` cost). transformers skips them the same way while it
# builds a model whose weights it will load (`no_init_weights`).
_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)


@contextmanager
def skip_init():
    """Within: torch.nn.init's initialisers return their tensor untouched (for meta-device builds only)."""
    from torch.nn import init

    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS if hasattr(init, name)}

    def untouched(tensor, *args, **kwargs):
        return tensor

    try:
        for name in saved:
            setattr(init, name, untouched)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def _from_factory(spec: str):
    from torch import nn

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {module_name!r} for MODEL {spec!r}: {exc}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"{module_name!r} has no attribute {attr!r} (MODEL {spec!r})")
        target = getattr(target, part)
    model = target() if callable(target) and not isinstance(target, nn.Module) else target
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model
