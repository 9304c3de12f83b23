"""The language model loaded once per export: the torch model and tokenizer, the evaluation and calibration text,
and what every artifact is measured against (the torch model's greedy continuations, perplexity and speed).

The figures are computed at first use and kept, so the cells of a comparison matrix share one torch reference:
the same continuations, the same perplexity, one speed measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiln.config import ExportConfig
from kiln.errors import UsageError
from kiln.llm.measure import perplexity, reference_runs, speed
from kiln.llm.runners import TorchDecoder
from kiln.llm.source import check_memory, load_model, read_spec

PPL_CHUNK = 128  # tokens per perplexity window
PPL_CHUNKS = 8
REFERENCE_TOKENS = 32  # greedy continuation length compared per prompt


@dataclass
class Loaded:
    folder: Path  # the Hugging Face folder (a GGUF source is read into one first)
    origin: dict  # what the user gave: kind, location, name, the GGUF's sha256
    cfg: dict  # its config.json
    threads: int
    spec: Any
    model: Any
    tokenizer: Any
    reference: TorchDecoder
    prompts: list[np.ndarray]
    windows: list[np.ndarray]  # perplexity windows
    speed_prompt: np.ndarray
    where: str  # where the prompts came from, for the report
    calibration_windows: list[np.ndarray] | None  # data-aware int4's calibration text, tokenized
    calibration: str | None  # what that text is
    _references: list | None = field(default=None, repr=False)
    _perplexity: float | None = field(default=None, repr=False)
    _speed: dict | None = field(default=None, repr=False)

    def references(self) -> list:
        """The torch model's greedy continuation of every prompt."""
        if self._references is None:
            self._references = reference_runs(self.reference, self.prompts, REFERENCE_TOKENS)
        return self._references

    def perplexity(self) -> float:
        if self._perplexity is None:
            self._perplexity = perplexity(self.reference, self.windows)
        return self._perplexity

    def measured(self) -> dict | None:
        """The torch model's figures measured so far (None before any): what every artifact was compared with."""
        if self._perplexity is None:
            return None
        bench = self._speed or {}
        return {"runtime": "torch eager", "threads": self.threads, "perplexity": self._perplexity,
                "perplexity_tokens": int(sum(len(w) - 1 for w in self.windows)), "text": self.where,
                "decode_tokens_per_s": bench.get("decode_tokens_per_s"), "ttft_ms": bench.get("ttft_ms")}

    def release_model(self) -> None:
        """Drop the torch model once nothing more is compared with it (its measured figures stay)."""
        import gc

        self.model = self.reference = None
        gc.collect()

    def speed(self, new_tokens: int, rounds: int) -> dict:
        """The torch model's own decode speed, for the report's analysis."""
        if self._speed is None:
            self._speed = speed(lambda: self.reference, self.speed_prompt, new_tokens, rounds)
            self._speed["resident_mib"] = self.spec.weight_bytes_fp32 / 2**20  # loaded before timing: its weights
        return self._speed


def load(config: ExportConfig, folder: Path, cfg: dict, work: Path, threads: int, calibrate: bool, progress) -> Loaded:
    """The source stage (a GGUF read into a Hugging Face folder) and the load stage. `calibrate`: some build will
    quantize int4 with the calibration text, so tokenize it now."""
    origin = {"kind": "huggingface", "location": str(folder), "name": folder.name, "gguf": None}
    if folder.suffix.lower() == ".gguf":  # read into a Hugging Face folder: every stage below then works on that
        from kiln.exporters.base import sha256_file
        from kiln.llm.gguf_source import cached_folder_from_gguf

        with progress.stage("source") as st:
            origin.update(kind="gguf", gguf=sha256_file(folder))
            folder, cached = cached_folder_from_gguf(folder, work / "source", origin["gguf"], config.cache)
            st.result = (f"{origin['name']} read and dequantized to fp32 by transformers"
                         + (" (from the stage cache)" if cached else ""))
    with progress.stage("load") as st:
        spec = read_spec(folder, cfg)  # each target checked the architectures it takes when it resolved
        check_memory(spec, config.llm.max_memory, folder)
        model, tokenizer = load_model(folder, config.trust_remote_code)
        prompts, windows, speed_prompt, where = _texts(config, tokenizer, spec)
        calibration_windows = described = None
        if calibrate and config.calibration is not None:
            from kiln.llm.data_aware import calibration_windows as tokenize_calibration

            calibration_windows, described = tokenize_calibration(config.calibration.path, config.calibration.limit,
                                                                  tokenizer)
        st.result = (f"{spec.model_type}, {spec.parameters / 1e6:.1f} M parameters, {spec.layers} layers; "
                     f"{len(prompts)} prompts from {where}")
    return Loaded(folder, origin, cfg, threads, spec, model, tokenizer, TorchDecoder(model, threads), prompts, windows, speed_prompt,
                  where, calibration_windows, described)


def _texts(config: ExportConfig, tokenizer, spec) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, str]:
    """(prompts, perplexity windows, the speed prompt of exactly --sequence-length tokens, where they came from)."""
    source = config.evaluation
    if source is not None:
        from kiln.calibration.text import read_lines

        if not source.path.is_file():
            raise UsageError(f"evaluation text {source.path} is not a file", hint="pass a .txt file, one prompt a line")
        lines = read_lines(source.path, source.limit)
        encoded = [np.asarray(tokenizer(line)["input_ids"], dtype=np.int64) for line in lines]
        prompts = [ids for ids in encoded if len(ids) >= 4][:config.llm.prompts]
        stream = np.concatenate(encoded)
        where = f"{len(lines)} lines of {source.path.name}"
    elif config.synthetic_data:
        rng = np.random.default_rng(config.seed)
        stream = rng.integers(0, spec.vocab_size, 4096, dtype=np.int64)
        prompts = [stream[i * 16:(i + 1) * 16] for i in range(config.llm.prompts)]
        where = "random tokens (--synthetic-data): fidelity figures say nothing about real text"
    else:
        raise UsageError("a language model needs evaluation text for its fidelity figures",
                         hint="pass --eval FILE.txt (one prompt per line), or --synthetic-data")
    if not prompts:
        raise UsageError("no line of the evaluation text has 4 or more tokens", hint="give longer lines")
    windows = [stream[i:i + PPL_CHUNK] for i in range(0, len(stream) - PPL_CHUNK + 1, PPL_CHUNK)][:PPL_CHUNKS]
    windows = windows or [stream]
    length = config.sequence_length
    prompt = np.resize(stream, length) if len(stream) < length else stream[:length]
    return prompts, windows, prompt.astype(np.int64), where
