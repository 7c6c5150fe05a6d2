"""Turning an API error into messages placed next to the form fields they are about.

The API names the culprit in `details.field` (one problem) or `details.problems[*].field` (several; package
problems also name the `file`). A form knows which of its inputs stand for which API fields (`aliases`); what
matches no input is shown at the top of the form, so no message is ever lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiot.web.apiclient import ApiError


@dataclass
class Problem:
    message: str
    field: str | None = None
    file: str | None = None


@dataclass
class FormErrors:
    """Messages by form input name, plus the general ones; `problems` keeps file/field rows for packages."""

    by_field: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general or self.problems)

    def get(self, name: str) -> list[str]:
        return self.by_field.get(name, [])

    def add(self, name: str | None, message: str) -> None:
        if name:
            self.by_field.setdefault(name, []).append(message)
        else:
            self.general.append(message)


def _match(api_field: str | None, aliases: dict[str, str]) -> str | None:
    """The form input for an API field: exact, else the longest alias that is a dotted prefix of it."""
    if not api_field:
        return None
    if api_field in aliases:
        return aliases[api_field]
    best = None
    for key in aliases:
        if api_field.startswith(key + ".") and (best is None or len(key) > len(best)):
            best = key
    return aliases[best] if best is not None else None


def form_errors(error: ApiError, aliases: dict[str, str] | list[str], *, files: bool = False) -> FormErrors:
    """Place `error` on the form. `aliases`: API field -> input name (a list means the names are equal).
    With `files=True` package problems (file, field, message) are kept as rows for a problem table as well."""
    if isinstance(aliases, list):
        aliases = {name: name for name in aliases}
    out = FormErrors()
    problems = error.details.get("problems") if isinstance(error.details, dict) else None
    if isinstance(problems, list) and problems:
        for raw in problems:
            if not isinstance(raw, dict):
                continue
            message = str(raw.get("message", ""))
            api_field = raw.get("field") or None
            file = raw.get("file") or None
            if files and file:
                out.problems.append(Problem(message, api_field, file))
                continue
            target = _match(api_field, aliases)
            if target:
                out.add(target, message)
            else:
                where = f"{api_field}: " if api_field else ""
                out.general.append(where + message)
        if files and out.problems and not out.by_field and not out.general:
            what = error.message.split(":")[0] if ":" in error.message else error.message
            count = len(out.problems)
            out.general.append(f"{what}: {count} problem{'s' if count != 1 else ''}, listed by file and field below")
        return out
    target = _match(error.details.get("field") if isinstance(error.details, dict) else None, aliases)
    out.add(target, error.message)
    return out


def one_error(name: str | None, message: str) -> FormErrors:
    out = FormErrors()
    out.add(name, message)
    return out


def clean(form: Any, names: list[str]) -> dict[str, str]:
    """The submitted text values (stripped) of `names`, to refill a form after an error."""
    return {n: str(form.get(n, "")).strip() for n in names}
