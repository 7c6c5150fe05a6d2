"""Original model zip (config.json + hook modules + model.pkl/model.h5) -> our model package.

The original platform generated a Flask server per model that did, per request:
`pre = <preprocessing.method_name>([values of the input params, in order])` (for an image input: the path of
the uploaded image file), `pred = model.predict(pre)`, `out = <postprocessing.method_name>(pred)` and answered
`{"output": out}`. The converted package keeps every original file and adds `model.json` plus a generated
entrypoint module (`aiot_legacy_entry.py`) doing exactly that inside our model server.

Pickle safety: unpickling runs arbitrary code, so the pickle is loaded only by the generated entrypoint, i.e.
inside the model's own sandbox on a node. Here it is only *disassembled* with `pickletools` (which executes
nothing) to refuse a file that is not a complete pickle and to list the modules it will import.
"""

from __future__ import annotations

import ast
import io
import pickletools
import sys
from typing import Any

from aiot.artifacts.legacy.common import (
    Converted,
    LegacyFormatError,
    check_converted,
    clean_requirements,
    dumps,
    identifier,
    load_json,
    require,
    slugify,
)
from aiot.artifacts.manifests import ModelManifest
from aiot.artifacts.validate import _top_level_defs

CONFIG = "config.json"
ENTRY_MODULE = "aiot_legacy_entry"
IMAGE_TYPES = {"jpg", "jpeg", "png", "bmp", "image"}
HOOKS = ("preprocessing", "postprocessing")
H5_MAGIC = b"\x89HDF\r\n\x1a\n"

SCALAR_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "integer": {"type": "integer"},
    "long": {"type": "integer"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "number": {"type": "number"},
    "str": {"type": "string"},
    "string": {"type": "string"},
    "text": {"type": "string"},
    "bool": {"type": "boolean"},
    "boolean": {"type": "boolean"},
    "list": {"type": "array", "items": "number"},
    "array": {"type": "array", "items": "number"},
    "dict": {"type": "object"},
    "json": {"type": "object"},
    "object": {"type": "object"},
}
"""Original `input_params` type names -> our field types. A list is taken as a list of numbers (the usual
feature vector); an app sending other items gets a 422 naming the field, and the note says so."""


def parse_params(params: Any, key: str) -> list[tuple[str, str]]:
    """`[{"temp": "float"}, {"hum": "float"}]` (or one object with several keys) -> [(name, type), ...]."""
    if not isinstance(params, list):
        raise LegacyFormatError(CONFIG, key, 'expected a list of {"param": "type"} objects', code="wrong_type")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(params):
        if not isinstance(item, dict) or not item:
            raise LegacyFormatError(CONFIG, f"{key}[{i}]", 'expected an object {"param": "type"}', code="wrong_type")
        for name, kind in item.items():
            if not isinstance(kind, str):
                raise LegacyFormatError(
                    CONFIG,
                    f"{key}[{i}].{name}",
                    'the type must be a string such as "float" or "jpg"',
                    code="wrong_type",
                )
            if name in dict(out):
                raise LegacyFormatError(CONFIG, f"{key}[{i}].{name}", "parameter named twice", code="duplicate")
            out.append((name, kind.strip().lower()))
    return out


def _hook(files: dict[str, bytes], config: dict[str, Any], section: str) -> tuple[str, str]:
    """(module name, function name) of a hook, checked by parsing the module (never importing it)."""
    spec = require(config, CONFIG, section, dict)
    filename = require(spec, CONFIG, "name", str, section)
    method = require(spec, CONFIG, "method_name", str, section)
    if not filename.endswith(".py") or "/" in filename or not filename[:-3].isidentifier():
        raise LegacyFormatError(
            CONFIG,
            f"{section}.name",
            f"'{filename}' must name a Python file at the package root, e.g. preprocess.py",
            code="invalid_value",
        )
    if filename not in files:
        raise LegacyFormatError(
            filename,
            f"{CONFIG} {section}.name",
            "hook module named in config.json is not in the zip",
            code="missing_file",
        )
    try:
        tree = ast.parse(files[filename].decode("utf-8-sig"), filename=filename)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        raise LegacyFormatError(
            filename, f"line {line}" if line else None, f"does not compile: {exc}", code="syntax_error"
        ) from None
    defs = _top_level_defs(tree)
    if method not in defs:
        known = sorted(n for n, node in defs.items() if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))
        raise LegacyFormatError(
            filename,
            f"{CONFIG} {section}.method_name",
            f"'{method}' is not defined in {filename} (functions there: {', '.join(known) or 'none'})",
            code="hook_missing",
        )
    return filename[:-3], method


def pickle_globals(data: bytes, filename: str) -> list[str]:
    """Modules a pickle will import, read by disassembling it (nothing is executed); refuses a broken one."""
    found: list[str] = []
    try:
        ops = [(op, arg) for op, arg, _pos in pickletools.genops(io.BytesIO(data))]
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError and others on garbage
        raise LegacyFormatError(
            filename,
            f"{CONFIG} prediction.name",
            f"is not a valid pickle ({exc}); it could not be unpickled",
            code="bad_pickle",
        ) from None
    if not ops or ops[-1][0].name != "STOP":
        raise LegacyFormatError(
            filename, f"{CONFIG} prediction.name", "is a truncated pickle (no STOP opcode)", code="bad_pickle"
        )
    recent: list[tuple[Any, Any]] = []
    for op, arg in ops:
        if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
            found.append(arg.split(" ", 1)[0])
        elif (
            op.name == "STACK_GLOBAL"
            and len(recent) >= 2
            and all(o.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") for o, _ in recent[-2:])
        ):
            found.append(recent[-2][1])
        if op.name != "MEMOIZE":
            recent = [*recent[-1:], (op, arg)]
    modules = {m.split(".")[0] for m in found if all(p.isidentifier() for p in m.split("."))}
    return sorted(modules)


def _input_fields(params: list[tuple[str, str]], notes: list[str]) -> tuple[dict[str, Any], bool]:
    """Our `inputs` from the original params; (fields, is_image)."""
    if params and params[0][1] in IMAGE_TYPES:
        if len(params) > 1:
            notes.append(
                f"the first input is an image, so the other input params "
                f"({', '.join(n for n, _ in params[1:])}) are ignored, as on the original platform"
            )
        if params[0][1] == "bmp":
            notes.append("BMP images are not accepted by this platform's model server: send JPEG or PNG")
        return {
            "image": {
                "type": "image",
                "encodings": ["jpeg", "png"],
                "description": f"the image (original param '{params[0][0]}'); the preprocessing "
                "hook receives the path of a file holding it",
            }
        }, True
    fields: dict[str, Any] = {}
    for i, (name, kind) in enumerate(params):
        spec = SCALAR_TYPES.get(kind)
        if spec is None:
            if kind in IMAGE_TYPES:
                raise LegacyFormatError(
                    CONFIG,
                    f"preprocessing.input_params[{i}].{name}",
                    "an image may only be the first input param",
                    code="invalid_value",
                )
            raise LegacyFormatError(
                CONFIG,
                f"preprocessing.input_params[{i}].{name}",
                f"unknown type '{kind}'; expected one of {', '.join(sorted(set(SCALAR_TYPES) | IMAGE_TYPES))}",
                code="invalid_value",
            )
        field_name = identifier(name, "param")
        if field_name != name:
            notes.append(f"input param '{name}' is named '{field_name}' here (field names are identifiers)")
        fields[field_name] = dict(spec, description=f"original param '{name}' ({kind})")
        if spec["type"] == "array":
            notes.append(f"input '{field_name}' ({kind}) is taken as a list of numbers")
    return fields, False


def _output_field(config: dict[str, Any]) -> dict[str, Any]:
    post = config.get("postprocessing") or {}
    try:
        params = parse_params(post.get("output_params") or [], "postprocessing.output_params")
    except LegacyFormatError:
        params = []
    desc = "what the postprocessing hook returns (the original platform's `output`)"
    if len(params) == 1 and params[0][1] in SCALAR_TYPES:
        return dict(SCALAR_TYPES[params[0][1]], description=desc)
    return {"type": "object", "description": desc + "; any JSON value"}


def _requirements(
    files: dict[str, bytes], config: dict[str, Any], model_type: str, modules: list[str], notes: list[str]
) -> bytes:
    dep = config.get("dependency") or "requirements.txt"
    if not isinstance(dep, str):
        raise LegacyFormatError(CONFIG, "dependency", "expected the requirements file name", code="wrong_type")
    if dep not in files:
        if "dependency" in config:
            raise LegacyFormatError(
                dep,
                f"{CONFIG} dependency",
                "requirements file named in config.json is not in the zip",
                code="missing_file",
            )
        notes.append("no requirements.txt: nothing is installed besides the platform SDK")
        raw = ""
    else:
        raw = files[dep].decode("utf-8-sig", errors="replace")
    kept = clean_requirements(raw, notes)
    text = "\n".join(kept).lower()
    wanted = {
        "sklearn": "scikit-learn",
        "numpy": "numpy",
        "pandas": "pandas",
        "xgboost": "xgboost",
        "lightgbm": "lightgbm",
        "scipy": "scipy",
        "joblib": "joblib",
    }
    local = {name.split("/", 1)[0].removesuffix(".py") for name in files}
    for module in modules:
        dist = wanted.get(module)
        if dist and dist not in text and module not in text:
            kept.append(dist)
            notes.append(f"the pickle imports '{module}', so '{dist}' was added to requirements.txt")
        elif (
            not dist
            and module not in text
            and module not in local
            and module not in sys.stdlib_module_names
            and module not in ("__builtin__", "copy_reg")
        ):
            notes.append(
                f"WARNING: the pickle imports '{module}', which neither requirements.txt nor the package "
                "provides: loading the model will fail unless a requirement installs it"
            )
    if model_type == "h5" and "tensorflow" not in text and "keras" not in text:
        kept.append("tensorflow-cpu")
        notes.append("model.h5 needs Keras: 'tensorflow-cpu' was added to requirements.txt")
    return ("\n".join(line for line in kept if line.strip()) + "\n").encode()


ENTRY_TEMPLATE = '''"""Generated by `aiot import` from the original platform's config.json (re-import to change it).

Per request, as the original platform's generated server did: the preprocessing hook gets the input values
in the declared order (or, for an image model, the path of a file holding the image); its result goes to
`model.predict`; that result to the postprocessing hook; the answer is {{"output": <its result>}}.

The model file is unpickled here, inside this model's sandbox, never by the control plane.
"""

import importlib
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRE = ({pre_module!r}, {pre_method!r})
POST = ({post_module!r}, {post_method!r})
MODEL_FILE = {model_file!r}
MODEL_TYPE = {model_type!r}
PARAMS = {params!r}
IMAGE = {image!r}


class LegacyRequest(list):
    """The input values in declared order (a list, as the original hooks got), also readable by name."""

    def __init__(self, values, names):
        super().__init__(values)
        self.names = list(names)

    def __getitem__(self, key):
        if isinstance(key, str):
            return list.__getitem__(self, self.names.index(key))
        return list.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self.names else default

    def keys(self):
        return list(self.names)

    def items(self):
        return list(zip(self.names, self))


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, dict):
        return {{str(k): _jsonable(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


class LegacyModel:
    def load(self):
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        os.chdir(HERE)  # the original hooks opened files relative to the package folder
        self.pre = getattr(importlib.import_module(PRE[0]), PRE[1])
        self.post = getattr(importlib.import_module(POST[0]), POST[1])
        path = HERE / MODEL_FILE
        try:
            if MODEL_TYPE == "pkl":
                import pickle

                with open(path, "rb") as fh:
                    self.model = pickle.load(fh)
            else:
                try:
                    from tensorflow import keras
                except ImportError:
                    import keras
                self.model = keras.models.load_model(str(path))
        except Exception as exc:
            raise RuntimeError(
                f"{{MODEL_FILE}} (config.json prediction.name) could not be loaded: {{type(exc).__name__}}: {{exc}}"
            ) from exc
        if not callable(getattr(self.model, "predict", None)):
            raise RuntimeError(f"{{MODEL_FILE}} (config.json prediction.name) has no predict() method")

    def predict(self, inputs):
        if IMAGE:
            data = inputs["image"]
            suffix = ".png" if data[:4] == b"\\x89PNG" else ".jpg"
            fd, name = tempfile.mkstemp(suffix=suffix, prefix="legacy-input-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                out = self.post(self.model.predict(self.pre(name)))
            finally:
                os.unlink(name)
        else:
            request = LegacyRequest([inputs.get(field) for field, _ in PARAMS], [orig for _, orig in PARAMS])
            out = self.post(self.model.predict(self.pre(request)))
        return {{"output": _jsonable(out)}}
'''


def convert_model(
    files: dict[str, bytes], source: str = "model.zip", *, version: str = "1.0.0", name: str | None = None
) -> Converted:
    """Convert an original model zip's files; LegacyFormatError names the file and key of the first problem."""
    config = load_json(files, CONFIG)
    if not isinstance(config, dict):
        raise LegacyFormatError(CONFIG, None, "expected a JSON object", code="wrong_type")
    notes: list[str] = []
    original_name = require(config, CONFIG, "name", str)
    pkg_name = name or slugify(original_name, "model")
    if pkg_name != original_name:
        notes.append(f"model '{original_name}' is named '{pkg_name}' here (lowercase letters, digits, '-')")
    pre_module, pre_method = _hook(files, config, "preprocessing")
    post_module, post_method = _hook(files, config, "postprocessing")
    prediction = require(config, CONFIG, "prediction", dict)
    model_type = require(prediction, CONFIG, "model_type", str, "prediction")
    if model_type not in ("pkl", "h5"):
        raise LegacyFormatError(
            CONFIG,
            "prediction.model_type",
            f"'{model_type}' is not supported; expected 'pkl' (pickle) or 'h5' (Keras)",
            code="invalid_value",
        )
    model_file = prediction.get("name") or f"model.{model_type}"
    if not isinstance(model_file, str):
        raise LegacyFormatError(CONFIG, "prediction.name", "expected the model file name", code="wrong_type")
    if model_file not in files:
        raise LegacyFormatError(
            model_file, f"{CONFIG} prediction.name", "model file is not in the zip", code="missing_file"
        )
    modules: list[str] = []
    if model_type == "pkl":
        modules = pickle_globals(files[model_file], model_file)
    elif not files[model_file].startswith(H5_MAGIC):
        raise LegacyFormatError(
            model_file,
            f"{CONFIG} prediction.model_type",
            "model_type is 'h5' but the file is not an HDF5 (Keras) file",
            code="bad_model_file",
        )
    params = parse_params(
        require(require(config, CONFIG, "preprocessing", dict), CONFIG, "input_params", list, "preprocessing"),
        "preprocessing.input_params",
    )
    if not params:
        raise LegacyFormatError(
            CONFIG, "preprocessing.input_params", "at least one input param is needed", code="invalid_value"
        )
    inputs, image = _input_fields(params, notes)
    if ENTRY_MODULE + ".py" in files or "model.json" in files:
        raise LegacyFormatError(
            ENTRY_MODULE + ".py" if ENTRY_MODULE + ".py" in files else "model.json",
            None,
            "this file name is reserved for the converted package",
            code="reserved_name",
        )
    description = config.get("description") if isinstance(config.get("description"), str) else ""
    manifest = {
        "format": 1,
        "name": pkg_name,
        "version": version,
        "description": (description or f"Imported from the original platform's model '{original_name}'.")[:4000],
        "framework": "keras" if model_type == "h5" else "pickle",
        "entrypoint": f"{ENTRY_MODULE}:LegacyModel",
        "inputs": inputs,
        "outputs": {"output": _output_field(config)},
        "requirements": "requirements.txt",
    }
    check_converted(ModelManifest, manifest, "model.json")
    out = {k: v for k, v in files.items() if k != (config.get("dependency") or "requirements.txt")}
    out["requirements.txt"] = _requirements(files, config, model_type, modules, notes)
    entry_params = [(f, orig) for f, (orig, _) in zip(inputs, params, strict=False)] if not image else []
    out[ENTRY_MODULE + ".py"] = ENTRY_TEMPLATE.format(
        pre_module=pre_module,
        pre_method=pre_method,
        post_module=post_module,
        post_method=post_method,
        model_file=model_file,
        model_type=model_type,
        params=entry_params,
        image=image,
    ).encode()
    out["model.json"] = dumps(manifest)
    if modules:
        notes.append(f"the pickle imports: {', '.join(modules)} (it is unpickled only inside the model's sandbox)")
    return Converted(kind="model", name=pkg_name, source=source, files=out, notes=notes)
