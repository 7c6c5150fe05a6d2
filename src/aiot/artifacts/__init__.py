"""Package formats (model, app, device type), safe unpacking and validation. See README.md."""

from aiot.artifacts.manifests import AppManifest, DeviceTypeDefinition, ModelManifest
from aiot.artifacts.packing import package_files, zip_folder
from aiot.artifacts.schemas import export_schemas, schema_for
from aiot.artifacts.unpack import (
    ArchiveListing,
    UnpackError,
    UnpackLimits,
    UnpackProblem,
    inspect_archive,
    safe_unpack,
)
from aiot.artifacts.validate import (
    Catalog,
    PackageInvalid,
    Problem,
    StaticCatalog,
    ValidationReport,
    validate_app_package,
    validate_device_type,
    validate_model_package,
)

__all__ = [
    "AppManifest",
    "ArchiveListing",
    "Catalog",
    "DeviceTypeDefinition",
    "ModelManifest",
    "PackageInvalid",
    "Problem",
    "StaticCatalog",
    "UnpackError",
    "UnpackLimits",
    "UnpackProblem",
    "ValidationReport",
    "export_schemas",
    "inspect_archive",
    "package_files",
    "safe_unpack",
    "schema_for",
    "validate_app_package",
    "validate_device_type",
    "validate_model_package",
    "zip_folder",
]
