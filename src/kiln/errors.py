"""The error hierarchy. Every expected failure is a KilnError with a hint and an exit code.

A bug is not a KilnError: it exits 1 with a traceback. Exit codes are part of the CLI contract
that CI scripts rely on, so they live here, in one place.
"""

from __future__ import annotations


_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """`text` with every character Python splits lines at shown as its escape: user input quoted in an error
    must not break the one-line contract."""
    return text.translate(_LINE_BREAKS)


class KilnError(Exception):
    """An expected failure: `message` says what went wrong, `hint` what to do about it."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str | None = None, *, stage: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.stage = stage

    def one_line(self) -> str:
        """One line whatever the input quoted in it: line breaks become visible escapes."""
        where = f"{self.stage}: " if self.stage else ""
        fix = f" ({self.hint})" if self.hint else ""
        return one_line(f"{where}{self.message}{fix}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "stage": self.stage, "message": self.message,
                "hint": self.hint, "exit_code": self.exit_code}


class UsageError(KilnError):
    """Bad input: a missing path, a file that is not a model, a malformed option."""

    exit_code = 2
    kind = "usage"


class MissingDependencyError(KilnError):
    """An optional package this request needs is not installed."""

    exit_code = 3
    kind = "missing_dependency"


class UnsupportedTargetError(KilnError):
    """The target cannot run what was asked (a precision, a device this host lacks)."""

    exit_code = 3
    kind = "unsupported"


class GateError(KilnError):
    """A gate the user set failed: the accuracy budget of an export, or the regression gate of `kiln compare`."""

    exit_code = 4
    kind = "gate"


class AccuracyGateError(GateError):
    """The compiled model is further from the source model than the accuracy budget allows.

    It carries the full report (status "rejected"), which `--json` prints: CI wants the numbers."""

    kind = "accuracy_gate"

    def __init__(self, message: str, hint: str | None = None, *, stage: str | None = None, report: dict | None = None):
        super().__init__(message, hint, stage=stage)
        self.report = report


class RegressionError(GateError):
    """`kiln compare`: the new report is slower, less accurate or larger than the baseline allows."""

    kind = "regression"


class VerificationError(KilnError):
    """`kiln verify`: a file, the manifest or its signature is not what the artifact claims."""

    exit_code = 6
    kind = "verify_failed"


class ExportError(KilnError):
    """Export or compilation failed, or the exported graph does not match the source model."""

    exit_code = 5
    kind = "export_failed"
