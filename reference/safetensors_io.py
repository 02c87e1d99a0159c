"""Minimal safetensors reader/writer (no dependency on the `safetensors` package).

Layout: 8-byte little-endian header length H, then H bytes of UTF-8 JSON, then the data block.
The JSON maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
the start of the data block) plus an optional "__metadata__" {str: str}. The writer sorts tensors
by name, lays them out contiguously without gaps, and pads the JSON with spaces so that the data
block starts at a multiple of 8 bytes from the beginning of the file.
"""
import json
import struct

import numpy as np
import torch

_NP_OF = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_TORCH_TO_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def _to_bytes(t: torch.Tensor, dtype: str) -> bytes:
    t = t.detach().cpu().contiguous()
    if dtype == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(np.dtype(_NP_OF[dtype]).newbyteorder("<")).tobytes()


def save_file(tensors: dict, path: str, metadata: dict = None, dtype: str = None) -> None:
    """Write {name: torch.Tensor} to `path`. `dtype` (e.g. "F32") converts every tensor;
    None keeps each tensor's own dtype."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        dt = dtype or _TORCH_TO_ST[t.dtype]
        b = _to_bytes(t, dt)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-(8 + len(h))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_file(path: str, as_dtype: torch.dtype = None):
    """Return ({name: torch.Tensor}, metadata dict). `as_dtype` converts every floating tensor."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        b0, b1 = info["data_offsets"]
        buf = raw[base + b0:base + b1]
        shape = tuple(info["shape"])
        dt = info["dtype"]
        if dt == "BF16":
            arr = np.frombuffer(buf, dtype="<i2").copy()
            t = torch.from_numpy(arr).view(torch.bfloat16).reshape(shape)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(_NP_OF[dt]).newbyteorder("<")).copy()
            t = torch.from_numpy(arr.astype(_NP_OF[dt])).reshape(shape)
        if as_dtype is not None and t.is_floating_point():
            t = t.to(as_dtype)
        out[name] = t
    return out, meta
