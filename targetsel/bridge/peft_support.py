"""Which PEFT versions targetsel is tested with, and one warning for any other.

pyproject's lower bound is the oldest PEFT the CI runs the PEFT-facing suites against; there is no
upper bound, so the next PEFT release installs. Everything targetsel says about a config is
PEFT's own answer — a real `get_peft_model` on a skeleton, or the fast path that was proven equal
to it on the tested versions — so an untested version still verifies with its own code; only the
fast path's knowledge of PEFT's rules may lag behind a new release. That is worth one warning per
process, not an error.
"""

from __future__ import annotations

import warnings
from typing import Optional

from targetsel.errors import TargetselWarning
from targetsel.model.quantized import installed_peft

# (oldest, newest) PEFT minor versions the CI runs (.ci/run): keep in step with pyproject.toml.
TESTED_PEFT = ((0, 17), (0, 21))

_warned = False


def default_targets(peft_type) -> dict:
    """PEFT's per-architecture default `target_modules` for a method: model_type → targets.

    peft >= 0.18 keeps the table on the tuner class (`target_module_mapping`); older releases read
    `peft.utils.constants.TRANSFORMERS_MODELS_TO_<METHOD>_TARGET_MODULES_MAPPING` inside each tuner's
    `_prepare_adapter_config`."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import constants

    mapping = getattr(PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type), "target_module_mapping", None)
    if mapping is None:
        name = str(getattr(peft_type, "value", peft_type)).upper()
        mapping = getattr(constants, f"TRANSFORMERS_MODELS_TO_{name}_TARGET_MODULES_MAPPING", None)
    return mapping or {}


def untested_peft(version: Optional[tuple[int, ...]] = None) -> Optional[str]:
    """Why `version` (default: the installed PEFT) is outside the tested range, or None."""
    version = installed_peft() if version is None else version
    if version is None:
        return None
    minor = tuple(version[:2])
    low, high = TESTED_PEFT
    shown = ".".join(str(v) for v in version)
    if minor > high:
        return (f"peft {shown} is newer than the newest version targetsel is tested with "
                f"({high[0]}.{high[1]}.x); verification still runs this PEFT's own code, but the fast path "
                "(verify, dry_run, check) may not know rules it changed: dry_run(model, config, real=True) "
                "asks a real get_peft_model")
    if minor < low:
        return (f"peft {shown} is older than the oldest version targetsel is tested with ({low[0]}.{low[1]}); "
                f"upgrade peft (pip install 'peft>={low[0]}.{low[1]}')")
    return None


def warn_if_untested() -> None:
    """One TargetselWarning per process when the installed PEFT is outside `TESTED_PEFT`."""
    global _warned
    if _warned:
        return
    _warned = True
    reason = untested_peft()
    if reason is not None:
        warnings.warn(TargetselWarning(reason), stacklevel=3)
