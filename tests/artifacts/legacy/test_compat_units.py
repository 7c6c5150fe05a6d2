"""platform_sdk's original-SDK names: importable unchanged, and the ones this platform does not provide say so."""

from __future__ import annotations

import pytest

import platform_sdk
from platform_sdk import NotProvided, compat


def test_old_names_import_unchanged() -> None:
    namespace: dict = {}
    exec("from platform_sdk import *", namespace)  # noqa: S102 - what the original apps did
    for name in (
        "get_sensor_data",
        "get_sensor_image",
        "get_stream_image",
        "send_controller_data",
        "get_prediction",
        "get_prediction_using_image",
        "send_email_notification",
        "get_logger",
        "get_mongo_db_uri",
        "get_mongo_db_database",
    ):
        assert callable(namespace[name]), name
        assert getattr(platform_sdk, name) is getattr(compat, name, None) or name == "get_logger"


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda: compat.get_mongo_db_uri(), "get_mongo_db_uri"),
        (lambda: compat.get_mongo_db_database(), "get_mongo_db_database"),
        (lambda: compat.send_email_notification("a@example.com", "s", "b"), "send_email_notification"),
    ],
)
def test_not_provided_is_a_clear_error(call, what: str) -> None:  # noqa: ANN001
    with pytest.raises(NotProvided, match=f"{what} is not provided by this platform"):
        call()


def test_index_must_be_an_integer() -> None:
    with pytest.raises(TypeError, match="sensor index must be an integer"):
        compat.get_sensor_data("0")
