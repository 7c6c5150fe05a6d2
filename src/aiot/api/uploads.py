"""Receiving uploads without holding them in memory: the body is streamed to a temp file with a size cap.

Accepts either a raw body (`Content-Type: application/zip` or `application/octet-stream`, what the CLI sends)
or a multipart form with a `file` field (what browsers send).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Request
from starlette.datastructures import UploadFile

from aiot.api.state import service_context
from aiot.errors import PayloadTooLarge, ValidationFailed

CHUNK = 1024 * 1024


@contextlib.asynccontextmanager
async def received_upload(request: Request, suffix: str = ".zip") -> AsyncIterator[tuple[Path, str]]:
    """Yield (path of the uploaded bytes, original file name); the temp file is removed afterwards."""
    settings = service_context(request).settings
    limit = settings.max_upload_mb * 1024 * 1024
    tmp_dir = settings.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=tmp_dir)
    path = Path(name)
    filename = request.headers.get("x-filename", "upload" + suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form(max_files=1, max_fields=10)
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise ValidationFailed("multipart upload needs a 'file' field", field="file")
                filename = upload.filename or filename
                written = 0
                while chunk := await upload.read(CHUNK):
                    written += len(chunk)
                    _check_size(written, limit)
                    out.write(chunk)
            else:
                written = 0
                async for chunk in request.stream():
                    written += len(chunk)
                    _check_size(written, limit)
                    out.write(chunk)
        if path.stat().st_size == 0:
            raise ValidationFailed("the upload is empty: send the package as the request body", field="file")
        yield path, filename
    finally:
        path.unlink(missing_ok=True)


def _check_size(written: int, limit: int) -> None:
    if written > limit:
        raise PayloadTooLarge(
            f"upload is larger than the {limit // (1024 * 1024)} MiB limit (AIOT_MAX_UPLOAD_MB)", field="file"
        )
