"""Text data: one sample per line, tokenized with the model's own tokenizer."""

from __future__ import annotations

from pathlib import Path

from kiln.calibration.samples import DataContext, Samples
from kiln.errors import UsageError


def check_text_file(path: Path, role: str, need: str) -> None:
    """A language model's calibration or evaluation text must be a .txt file that exists; `role` names the option
    and `need` what the text is for, in the one-line refusal."""
    if path.suffix.lower() not in (".txt", ".text"):
        raise UsageError(f"{need} is text; {role} {path.name} is not a .txt file", hint="pass a .txt file, one text "
                                                                                       "a line")
    if not path.is_file():
        raise UsageError(f"{role} text {path} is not a file", hint="pass a .txt file, one text a line")


def read_lines(path: Path, limit: int | None) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"text file {path} is not valid UTF-8 (byte {exc.start})",
                         hint="re-encode it as UTF-8, one sample per line") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"text file {path} has no non-empty lines", hint="put one sample per line")
    return lines[:limit] if limit else lines


def text_samples(path: Path, context: DataContext, limit: int | None) -> Samples:
    if context.text_encoder is None:
        raise UsageError(f"{path} is a text file, but this model has no tokenizer",
                         hint="text data needs a Hugging Face folder with tokenizer files; pass .npz arrays otherwise")
    lines = read_lines(path, limit)
    feeds = tuple(context.text_encoder([line]) for line in lines)
    return Samples(
        feeds=feeds,
        kind="text",
        description=(f"{len(lines)} lines of {path.name}, tokenized with the model's tokenizer, "
                     f"padded/truncated to {context.sequence_length} tokens"),
        labels=tuple(line[:60] for line in lines),
    )
