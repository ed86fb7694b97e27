"""The names, shapes and dtypes of the tensors in an adapter's weights file, without its data.

A safetensors file is an 8-byte little-endian header length, that many bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`), then the
raw bytes. Only the header is read, and it is checked as the safetensors library checks it
(offsets inside the file, sizes that agree with shape × dtype), so a truncated or corrupt file is
reported here rather than half-trusted. A PyTorch `.bin` is a zip archive holding a pickle; with
`map_location="meta"` and `weights_only=True`, torch builds its tensors without reading their
storage (torch/serialization.py, `_load`: meta storages for a meta map_location), so its keys and
shapes come without the data. The legacy non-zip format has no such path and is refused.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from targetsel.errors import AdapterFileError

# safetensors dtype codes → bytes per element (safetensors/src/tensor.rs, Dtype::bitsize)
_ITEM_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit (MAX_HEADER_SIZE)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a weights file: its key, shape and dtype (the safetensors code, e.g. `"F32"`)."""

    key: str
    shape: tuple[int, ...]
    dtype: str


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, in file order, from its header alone."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            head = handle.read(8)
            if len(head) < 8:
                raise _corrupt(path, f"it is {size} bytes long, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > min(_MAX_HEADER, size - 8):
                raise _corrupt(path, f"its header claims {length} bytes but the file holds {size - 8} after the length")
            raw = handle.read(length)
    except OSError as exc:
        raise AdapterFileError(f"cannot read {str(path)!r}: {exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"its header is a JSON {type(header).__name__}, not an object")
    data_size = size - 8 - length
    out: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        out[key] = _entry(path, key, entry, data_size)
    return out


def _entry(path: Path, key: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise _corrupt(path, f"entry {key!r} lacks dtype, shape or data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _ITEM_BITS:
        raise _corrupt(path, f"entry {key!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _corrupt(path, f"entry {key!r} has a malformed shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        raise _corrupt(path, f"entry {key!r} has data_offsets {offsets!r} outside the {data_size} data bytes")
    numel = 1
    for d in shape:
        numel *= d
    if (numel * _ITEM_BITS[dtype] + 7) // 8 != offsets[1] - offsets[0]:
        raise _corrupt(path, f"entry {key!r}: shape {shape} of {dtype} does not fill its {offsets[1] - offsets[0]} bytes")
    return TensorInfo(key=key, shape=tuple(shape), dtype=dtype)


def _corrupt(path: Path, why: str) -> AdapterFileError:
    return AdapterFileError(
        f"{str(path)!r} is not a valid safetensors file: {why}. Save the adapter again with save_pretrained()."
    )


# torch dtypes as safetensors codes, for the .bin path and for building meta tensors back
_TORCH_CODES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "float16": "F16",
    "bfloat16": "BF16", "int32": "I32", "uint32": "U32", "float32": "F32", "int64": "I64", "uint64": "U64",
    "float64": "F64", "complex64": "C64", "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3",
    "float8_e8m0fnu": "F8_E8M0",
}


def torch_dtype(code: str):
    """The torch dtype of a safetensors code (float32 for the few torch cannot hold: shapes are what count)."""
    import torch

    for name, value in _TORCH_CODES.items():
        if value == code and hasattr(torch, name):
            return getattr(torch, name)
    return torch.float32


def read_bin_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a PyTorch `adapter_model.bin` (zip format), built on the meta device: no data read."""
    import torch

    path = Path(path)
    try:
        with path.open("rb") as handle:
            zipped = torch.serialization._is_zipfile(handle)
    except OSError as exc:
        raise AdapterFileError(f"cannot read {str(path)!r}: {exc}") from None
    if not zipped:
        raise AdapterFileError(
            f"{str(path)!r} is a legacy (non-zip) PyTorch file: its keys cannot be read without loading every tensor, "
            "which check_adapter does not do. Convert it once with save_pretrained(..., safe_serialization=True)."
        )
    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for a bad archive
        raise AdapterFileError(f"{str(path)!r} cannot be read as a PyTorch state dict: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise AdapterFileError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return {
        key: TensorInfo(key=key, shape=tuple(t.shape), dtype=_TORCH_CODES.get(str(t.dtype).removeprefix("torch."), "F32"))
        for key, t in state.items()
    }
