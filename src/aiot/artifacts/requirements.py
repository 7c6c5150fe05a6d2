"""The one rule for a package's requirements file, shared by the upload validator and the node agent.

Why so strict: a requirements line decides what code a node downloads and may *build* (run) before any
sandboxed workload starts. A package may therefore only name distributions and version ranges; where they
come from is the node admin's business (the node's index and its source-build allow-list), never the
package's. Refused, each naming its line:

- any option line (`-e`, `-r`, `-c`, `--index-url`, `--extra-index-url`, `--find-links`, `--trusted-host`...);
- direct URLs (`pkg @ https://...`, `pkg @ file:///...`), bare URLs and VCS references (`git+https://...`);
- local paths (`./wheels/x.whl`, `/abs/dir`, `../sdist.tar.gz`, `~/x`);
- line continuations (a trailing backslash would join the next line onto a checked one).

`check_lines` returns the problems (line number, code, message); `parse_requirements` returns the normalised
specifiers or raises `RequirementsRefused` with every problem. The validator and the agent call the same
functions, so a file that passed upload cannot be read differently on the node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

DEFAULT_REQUIREMENTS = "requirements.txt"
VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")
_COMMENT = re.compile(r"(^|\s)#.*$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class LineProblem:
    """One refused line: 1-based `line`, a stable `code` (`bad_requirement` or `unsupported_requirement`)."""

    line: int
    code: str
    message: str


class RequirementsRefused(ValueError):
    """A requirements file has refused lines; `problems` lists every one."""

    def __init__(self, source: str, problems: list[LineProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("; ".join(f"{source} line {p.line}: {p.message}" for p in problems))


def _refusal(line: str) -> tuple[str, str] | None:
    """(code, message) when `line` (comment already removed, stripped) is not a plain specifier."""
    if line.endswith("\\"):
        return "unsupported_requirement", "line continuations ('\\') are not allowed; one requirement per line"
    if line.startswith("-"):
        return (
            "unsupported_requirement",
            f"pip options are not allowed ({line.split()[0]!r}); list plain requirement specifiers "
            "(e.g. numpy>=1.26): the node's admin chooses the package index",
        )
    if line.lower().startswith(VCS_PREFIXES):
        return "unsupported_requirement", f"VCS requirements are not allowed ({line!r}); use a name and version range"
    if _URL.match(line):
        return "unsupported_requirement", f"URLs are not allowed ({line!r}); use a name and version range"
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        if line.startswith((".", "/", "~")) or "/" in line or line.endswith(ARCHIVE_SUFFIXES):
            return "unsupported_requirement", f"local paths are not allowed ({line!r}); use a name and version range"
        return "bad_requirement", f"cannot parse requirement {line!r}: {exc}"
    if req.url:
        return (
            "unsupported_requirement",
            f"direct URL requirements are not allowed ({req.name} @ ...); use a name and version range",
        )
    if req.name.lower().endswith(ARCHIVE_SUFFIXES):  # pip and uv would read `x.whl` as a file
        return "unsupported_requirement", f"local paths are not allowed ({line!r}); use a name and version range"
    return None


def check_lines(lines: Iterable[str]) -> tuple[list[str], list[LineProblem]]:
    """Normalised specifiers (sorted, de-duplicated, names canonical) and the problems of refused lines."""
    out: set[str] = set()
    problems: list[LineProblem] = []
    for number, raw in enumerate(lines, start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        refused = _refusal(line)
        if refused is not None:
            problems.append(LineProblem(number, *refused))
            continue
        req = Requirement(line)
        req.name = canonicalize_name(req.name)
        out.add(str(req))
    return sorted(out), problems


def parse_requirements(lines: Iterable[str], source: str = DEFAULT_REQUIREMENTS) -> list[str]:
    """The normalised specifiers of `lines`; `RequirementsRefused` naming every refused line."""
    specifiers, problems = check_lines(lines)
    if problems:
        raise RequirementsRefused(source, problems)
    return specifiers


def requirement_names(specifiers: Iterable[str]) -> set[str]:
    """Canonical distribution names of normalised specifiers."""
    return {canonicalize_name(Requirement(s).name) for s in specifiers}
