"""GGUF quantization by llama.cpp's own tools: `llama-imatrix` (the importance matrix, from the user's calibration
text, run on the float master) and `llama-quantize` (k-quants; with `--imatrix` where one was made).

Not a reimplementation: the same binaries from the same commit as the runtime, so a kiln Q4_K_M is the file
llama.cpp's own recipe gives for those weights (the research note checked `llama_model_quantize` byte-identical to
`llama-quantize`; the tool is used because only it can pass an importance matrix).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from kiln.llamacpp.convert import inspect
from kiln.llamacpp.toolchain import LlamaCpp

GGUF_TYPES = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0",
              "iq4_xs": "IQ4_XS"}
# An importance matrix weights the rounding error by how much each input column matters. llama.cpp uses it for its
# k-quants and i-quants; Q8_0 and Q4_0 ignore it.
USES_IMATRIX = ("q6_k", "q5_k_m", "q4_k_m", "iq4_xs")
IMATRIX_CONTEXT = 256  # tokens per llama-imatrix chunk: calibration text is usually short lines


def importance_matrix(build: LlamaCpp, master: Path, text: Path, out: Path, threads: int) -> dict:
    """llama-imatrix over the calibration text, in chunks of IMATRIX_CONTEXT tokens."""
    started = time.perf_counter()
    log = build.run("llama-imatrix", ["-m", master, "-f", text, "-o", out, "-c", IMATRIX_CONTEXT, "-t", threads,
                                      "--no-ppl"], what="importance matrix")
    chunks = re.search(r"computing over (\d+) chunks", log)
    return {"tool": "llama-imatrix", "chunks": int(chunks.group(1)) if chunks else None,
            "context": IMATRIX_CONTEXT, "calibration_text": text.name,
            "seconds": round(time.perf_counter() - started, 2)}


def quantize(build: LlamaCpp, master: Path, out: Path, precision: str, threads: int,
             imatrix: Path | None = None) -> dict:
    """`llama-quantize [--imatrix F] MASTER OUT TYPE THREADS`; the record says which tensors fell back to another
    type (a row length that is not a multiple of 256 cannot hold a k-quant block)."""
    started = time.perf_counter()
    args = (["--imatrix", imatrix] if imatrix else []) + [master, out, GGUF_TYPES[precision], threads]
    log = build.run("llama-quantize", args, what=f"quantize to {GGUF_TYPES[precision]}")
    fallback = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback quantization", log)
    record = inspect(out)
    record.update({"tool": "llama-quantize", "type": GGUF_TYPES[precision], "imatrix": imatrix is not None,
                   "fallback_tensors": int(fallback.group(1)) if fallback else 0,
                   "seconds": round(time.perf_counter() - started, 2)})
    return record
