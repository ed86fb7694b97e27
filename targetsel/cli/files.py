"""Files the command line reads and writes: JSON, PEFT adapter configs, and telling a config path
from a query on the command line."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from targetsel.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"


def read_json(path: Path, error: type) -> object:
    """The JSON in `path`, or `error` saying why it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {str(path)!r} as JSON: {exc}") from None


def is_adapter_argument(text: str) -> bool:
    """Whether a QUERY_OR_CONFIG argument names a PEFT adapter config rather than a query.

    A `.json` path or one written as a path (`./out`, `/x`, `~/x`), existing or not: a missing one
    is reported as missing, not parsed as a query. Otherwise an existing directory that holds
    adapter_config.json or is written with a slash (`out/lora`); a bare word that happens to name a
    directory without a config (`linear`) stays a query.
    """
    # no query starts like a path: atoms are words or key:value, operators are ! ( - and quotes
    if text.lower().endswith(".json") or text.startswith(("./", "../", "/", "~", ".\\", "..\\")):
        return True
    path = Path(text)
    try:
        if not path.is_dir():
            return False
        return "/" in text or os.sep in text or (path / ADAPTER_CONFIG).is_file()
    except OSError:  # a long query is no path the OS accepts ("File name too long"): it is a query
        return False


def read_peft_config(spec: str):
    """The PEFT config in `spec` (an adapter_config.json or its directory), as PEFT reads it."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / ADAPTER_CONFIG
    if not path.is_file():
        raise ConfigError(f"no adapter config at {str(path)!r}; pass an {ADAPTER_CONFIG} file or its directory")
    data = read_json(path, ConfigError)
    if not isinstance(data, dict) or "peft_type" not in data:
        raise ConfigError(f"{str(path)!r} is not a PEFT adapter config: it has no 'peft_type' (e.g. \"LORA\")")
    from peft import PeftConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if data["peft_type"] not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise ConfigError(
            f"{str(path)!r}: unknown peft_type {data['peft_type']!r}; the installed peft knows "
            + ", ".join(sorted(str(k.value if hasattr(k, "value") else k) for k in PEFT_TYPE_TO_CONFIG_MAPPING))
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PeftConfig.from_peft_type(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r}: peft rejects this config: {exc}") from None


def config_json(config) -> str:
    """The adapter_config.json text PEFT's `save_pretrained` writes for this config."""
    data = config.to_dict()
    for key, value in data.items():
        if isinstance(value, set):
            data[key] = sorted(value)
    return json.dumps(data, indent=2, sort_keys=True, default=str)
