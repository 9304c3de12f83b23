#!/usr/bin/env python3
"""Generate text with this kiln language-model artifact: needs numpy, `tokenizers` and its runtime only.

    python generate.py "The capital of France is" --new-tokens 32
    python generate.py --ids 1,2,3 --new-tokens 8 --json     # token ids in and out (no tokenizer needed)

Greedy decoding, batch 1, with the KV cache, using the runtime settings the artifact was measured with
(runtime.json). Copied verbatim into every language-model artifact by kiln; it imports nothing from kiln.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

def _plain_relative(name):
    """A path inside the artifact, as text: no NUL/control character, backslash, drive, '..', '.' or empty segment."""
    if not isinstance(name, str) or not name or name.startswith("/") or any(c in name for c in "\\:\x7f"):
        return False
    try:
        too_long = len(name.encode("utf-8")) > 4096
    except UnicodeEncodeError:  # a lone surrogate: no filesystem call could take it
        return False
    return not too_long and not any(ord(c) < 32 for c in name) and all(
        part not in ("", ".", "..") and len(part.encode("utf-8")) <= 255 for part in name.split("/"))


def read_runtime(script):
    """runtime.json with its model path checked as text before any filesystem call; exit 2 with one line if not."""
    try:
        runtime = json.loads((HERE / "runtime.json").read_text(encoding="utf-8"))
        ok = isinstance(runtime, dict) and _plain_relative(runtime.get("model")) and "backend" in runtime
    except (OSError, ValueError, RecursionError) as exc:
        print(f"{script}: cannot read runtime.json ({ascii(str(exc))[1:-1][:160]}); export the artifact again",
              file=sys.stderr)
        raise SystemExit(2) from None
    if not ok:
        model = runtime.get("model") if isinstance(runtime, dict) else None
        print(f"{script}: runtime.json has no backend or its model {ascii(model)[:120]} is not a relative path "
              f"inside the artifact; export the artifact again", file=sys.stderr)
        raise SystemExit(2)
    return runtime


def _onnxruntime(runtime):
    import onnxruntime as ort

    settings, layout = runtime["settings"], runtime["language_model"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    options.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    for key, value in settings.get("config_entries", {}).items():
        options.add_session_config_entry(key, str(value))
    session = ort.InferenceSession(str(HERE / runtime["model"]), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(settings.get("disabled_optimizers", [])))
    empty = np.zeros((1, layout["kv_heads"], 0, layout["head_dim"]), dtype=np.float32)
    state = {"past": {name: empty for name in layout["past"]}, "length": 0, "capacity": 0}
    wants_positions = any(i.name == "position_ids" for i in session.get_inputs())

    def allocate(capacity):
        """The fused graph's cache: one buffer per layer bound as past and present, appended to in place."""
        old, binding, buffers = state.get("buffers", {}), session.io_binding(), {}
        binding.bind_output("logits")  # first: output 0
        for past, present in zip(layout["past"], layout["present"]):
            array = np.zeros((1, layout["kv_heads"], capacity, layout["head_dim"]), dtype=np.float32)
            if past in old:
                array[:, :, :state["length"]] = old[past].numpy()[:, :, :state["length"]]
            buffers[past] = ort.OrtValue.ortvalue_from_numpy(array)  # kept alive here: the binding holds pointers
            binding.bind_ortvalue_input(past, buffers[past])
            binding.bind_ortvalue_output(present, buffers[past])
        state.update(binding=binding, buffers=buffers, capacity=capacity)

    def forward_shared(ids):
        n = ids.shape[1]
        if state["length"] + n > state["capacity"]:
            allocate(max(256, 2 * state["capacity"], 1 << (state["length"] + n - 1).bit_length()))
        mask = np.zeros((1, state["capacity"]), dtype=np.int64)
        mask[0, :state["length"] + n] = 1  # the tokens held: GroupQueryAttention reads the length from it
        binding = state["binding"]
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_output("logits")
        session.run_with_iobinding(binding)
        state["length"] += n
        return binding.get_outputs()[0].numpy()[0, -1]

    if layout.get("kv_buffer") == "shared":
        return forward_shared

    def forward(ids):
        n = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, state["length"] + n), dtype=np.int64), **state["past"]}
        if wants_positions:  # the TorchScript graph takes them; the fused graph derives them from the mask
            feed["position_ids"] = np.arange(state["length"], state["length"] + n, dtype=np.int64)[None]
        out = session.run(["logits", *layout["present"]], feed)
        state["past"] = dict(zip(layout["past"], out[1:]))
        state["length"] += n
        return out[0][0, -1]

    return forward


def _openvino(runtime):
    import openvino as ov

    settings = runtime["settings"]
    compiled = ov.Core().compile_model(str(HERE / runtime["model"]), settings.get("device", "CPU"),
                                       dict(settings.get("config", {})))
    request = compiled.create_infer_request()
    request.reset_state()
    inputs = {port.get_any_name() for port in compiled.inputs}
    state = {"length": 0}

    def forward(ids):
        n = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, state["length"] + n), dtype=np.int64),
                "position_ids": np.arange(state["length"], state["length"] + n, dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32)}
        request.infer({name: value for name, value in feed.items() if name in inputs})
        state["length"] += n
        return request.get_tensor("logits").data[0, -1].copy()

    return forward


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="")
    parser.add_argument("--ids", help="comma-separated prompt token ids instead of text")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON line (ids, text, timings)")
    args = parser.parse_args(argv)
    runtime = read_runtime("generate.py")
    tokenizer = None
    if args.ids:
        ids = [int(x) for x in args.ids.split(",") if x.strip()]
    else:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))
        ids = tokenizer.encode(args.prompt).ids
    if not ids:
        print("generate.py: empty prompt", file=sys.stderr)
        return 2
    forward = (_onnxruntime if runtime["backend"] == "onnxruntime" else _openvino)(runtime)
    eos = None
    if (HERE / "generation_config.json").is_file():
        eos = json.loads((HERE / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    start = time.perf_counter()
    logits = forward(np.asarray([ids], dtype=np.int64))
    ttft = time.perf_counter() - start
    out = [int(np.argmax(logits))]
    start = time.perf_counter()
    while len(out) < args.new_tokens and out[-1] not in eos:
        out.append(int(np.argmax(forward(np.asarray([[out[-1]]], dtype=np.int64)))))
    decode = time.perf_counter() - start
    text = tokenizer.decode(out) if tokenizer else None
    result = {"ids": out, "text": text, "ttft_ms": ttft * 1000,
              "tokens_per_s": (len(out) - 1) / decode if len(out) > 1 and decode > 0 else None}
    print(json.dumps(result) if args.json else text if text is not None else " ".join(map(str, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
