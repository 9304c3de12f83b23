"""The real artifact the document and bundle fuzz tests start from (exported once per module by the CLI)."""

from tests.fuzz.common import artifact  # noqa: F401
