"""JSON Schemas (draft 2020-12) for kiln's machine-readable outputs, shipped as package data.

- manifest: manifest.json of an artifact (schema_version "kiln.manifest/2")
- comparison: comparison.json of a multi-target export (schema_version "kiln.comparison/1")
- llm_report: report.json of a language-model artifact (schema_version "kiln.llm-report/1")
- llm_comparison: comparison.json of a language model's multi-target export (schema_version
  "kiln.llm-comparison/1")
- report: report.json of an artifact and `kiln export --json` output, including the failure report
  printed when a command fails (schema_version "kiln.report/1")

Loading a schema needs nothing beyond the standard library; validating needs `jsonschema` (a dependency
since `kiln verify` checks manifests), imported only when `validate_document` is called.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from kiln.errors import MissingDependencyError, UsageError

SCHEMA_NAMES = ("manifest", "report", "comparison", "llm_report", "llm_comparison", "build_index")


@functools.cache
def _schema_text(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def load_schema(name: str) -> dict:
    """The JSON Schema for `name` ("manifest", "report" or "comparison"), as a fresh dict."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema '{name}': kiln publishes {', '.join(SCHEMA_NAMES)}")
    return json.loads(_schema_text(name))


def read_document(raw: bytes | str, where: str, name: str, version: str, *, damaged: str, other_version: str,
                  reader: str = "this kiln reads", error=None, precheck=None) -> dict:
    """A JSON document of schema `name` at `version`, or one `error` line (UsageError by default) saying what is
    wrong: not JSON (`damaged` is the hint), another schema version (`other_version`), what `precheck(data)`
    raises (a more specific complaint than the schema's), or a schema violation."""
    error = error or UsageError
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{where} is not valid JSON ({str(exc)[:120]})", hint=damaged) from None
    if not isinstance(data, dict) or data.get("schema_version") != version:
        found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
        raise error(f"{where} has schema '{str(found)[:40]}', {reader} '{version}'", hint=other_version)
    if precheck is not None:
        precheck(data)
    problems = validate_document(data, name)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise error(f"{where} breaks the {name} schema: {problems[0][:200]}{more}", hint=damaged)
    return data


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def validate_document(doc: dict, name: str) -> list[str]:
    """Every way `doc` breaks the `name` schema, as 'where: what' lines; an empty list means valid."""
    try:
        import jsonschema
    except ImportError as exc:
        raise MissingDependencyError(
            f"validating a document against the kiln {name} schema needs the Python package 'jsonschema', "
            f"which is not installed", hint="pip install jsonschema") from exc
    from jsonschema.exceptions import best_match

    schema = load_schema(name)
    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in validator.iter_errors(doc):
        where = _where(error.absolute_path)
        if error.context:  # anyOf/oneOf: the instance matches no alternative; say which came closest and why
            closest = best_match(error.context)
            text = f"{where}: matches none of the allowed forms; closest: {_where(closest.absolute_path)}: {closest.message}"
        else:
            text = f"{where}: {error.message}"
        messages.append(text)
    return sorted(set(messages))
