"""Open Inference Protocol (KServe v2 REST) documents to and from the platform's predict format.

Why a translation and not a second server in every replica: replicas speak one small format
(`{"inputs": {name: value}}` -> `{"outputs": {name: value}}`, validated against the manifest), and OIP clients
(KServe, Triton and MLServer tooling) reach the same replicas through the gateway. The mapping is value-level:

- request: each input tensor `{"name", "shape", "datatype", "data"}` becomes `inputs[name]`: one element
  (shape `[1]`, `[]` or `[1, 1]`...) is the scalar, more elements are nested lists in the tensor's shape (row
  major). A BYTES tensor carries text; an image input takes its base64 text as the manifest expects.
- response: each output becomes a tensor: numbers as FP64 / INT64, booleans as BOOL, text as BYTES, lists of
  numbers with their shape, anything else (objects, lists of objects) as one BYTES element of JSON text.
- metadata: the manifest's inputs and outputs with OIP datatypes (shape `[-1]` where a list is expected).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel

from aiot.errors import ValidationFailed

DATATYPES = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}
_MANIFEST_TO_OIP = {
    "number": "FP64",
    "integer": "INT64",
    "boolean": "BOOL",
    "string": "BYTES",
    "image": "BYTES",
    "array": "FP64",
    "object": "BYTES",
}


def _reshape(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _flatten(value: Any) -> tuple[list[Any], list[int]] | None:
    """(row-major elements, shape) of a rectangular nested list of scalars; None when it is not one."""
    if not isinstance(value, list):
        return [value], []
    if not value:
        return [], [0]
    parts = [_flatten(v) for v in value]
    if any(p is None for p in parts):
        return None
    shapes = {tuple(p[1]) for p in parts if p is not None}
    if len(shapes) != 1:
        return None
    flat = [x for p in parts if p is not None for x in p[0]]
    return flat, [len(value), *next(iter(shapes))]


def request_to_inputs(doc: Any) -> dict[str, Any]:
    """The platform's `inputs` object for an OIP inference request; ValidationFailed names the bad member."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ValidationFailed('an inference request is a JSON object with "inputs": a list of tensors', field="inputs")
    inputs: dict[str, Any] = {}
    for i, tensor in enumerate(doc["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ValidationFailed(f'{where} must be an object with a "name"', field=where)
        shape, data, datatype = tensor.get("shape"), tensor.get("data"), tensor.get("datatype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValidationFailed(f"{where}.shape must be a list of non-negative integers", field=f"{where}.shape")
        if datatype not in DATATYPES:
            raise ValidationFailed(
                f"{where}.datatype must be one of {', '.join(sorted(DATATYPES))}", field=f"{where}.datatype"
            )
        if not isinstance(data, list):
            data = [data]
        flat = _flatten(data)
        if flat is None:
            raise ValidationFailed(f"{where}.data must be a list of scalars (or nested lists)", field=f"{where}.data")
        elements, count = flat[0], math.prod(shape)
        if len(elements) != count:
            raise ValidationFailed(
                f"{where}.data has {len(elements)} elements, shape {shape} needs {count}", field=f"{where}.data"
            )
        inputs[tensor["name"]] = elements[0] if count == 1 else _reshape(elements, shape)
    return inputs


def _tensor(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"name": name, "datatype": "BOOL", "shape": [1], "data": [value]}
    if isinstance(value, int):
        return {"name": name, "datatype": "INT64", "shape": [1], "data": [value]}
    if isinstance(value, float):
        return {"name": name, "datatype": "FP64", "shape": [1], "data": [value]}
    if isinstance(value, str):
        return {"name": name, "datatype": "BYTES", "shape": [1], "data": [value]}
    flat = _flatten(value) if isinstance(value, list) else None
    if flat is not None and flat[0] and all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat[0]):
        datatype = "INT64" if all(isinstance(x, int) for x in flat[0]) else "FP64"
        return {"name": name, "datatype": datatype, "shape": flat[1], "data": flat[0]}
    return {"name": name, "datatype": "BYTES", "shape": [1], "data": [json.dumps(value, separators=(",", ":"))]}


def outputs_to_response(
    outputs: dict[str, Any], model_name: str, model_version: str, request_id: str | None
) -> dict[str, Any]:
    """The OIP inference response for the platform's `outputs` object."""
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [_tensor(name, value) for name, value in outputs.items()],
    }
    if request_id:
        body["id"] = request_id
    return body


def _tensor_meta(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    kind = str((spec or {}).get("type", "object"))
    return {"name": name, "datatype": _MANIFEST_TO_OIP.get(kind, "BYTES"), "shape": [-1] if kind == "array" else [1]}


def model_metadata(manifest: dict[str, Any], versions: list[str]) -> dict[str, Any]:
    """OIP model metadata from a model manifest (`GET /v2/models/<name>`)."""
    return {
        "name": manifest.get("name"),
        "versions": versions,
        "platform": f"aiot-{manifest.get('framework', '')}",
        "inputs": [_tensor_meta(n, s) for n, s in (manifest.get("inputs") or {}).items()],
        "outputs": [_tensor_meta(n, s) for n, s in (manifest.get("outputs") or {}).items()],
    }


class TensorMetaOut(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataOut(BaseModel):
    """`GET /v2/models/<name>` (Open Inference Protocol, REST)."""

    name: str | None
    versions: list[str]
    platform: str
    inputs: list[TensorMetaOut]
    outputs: list[TensorMetaOut]


class ModelReadyOut(BaseModel):
    name: str
    version: str | None
    ready: bool


class TensorOut(TensorMetaOut):
    data: list[Any]


class InferResponseOut(BaseModel):
    """`POST /v2/models/<name>/infer` (Open Inference Protocol, REST)."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


class ServerLiveOut(BaseModel):
    live: bool


class ServerReadyOut(BaseModel):
    ready: bool


class ModelInfoOut(BaseModel):
    name: str
    version: str


class PredictOut(BaseModel):
    """Our predict format: the model's named outputs (a list of them for `/v1/predict/batch`)."""

    model: ModelInfoOut
    outputs: dict[str, Any] | list[dict[str, Any]]
