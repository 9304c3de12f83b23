"""Weight-only precisions for the decoder graph: ONNX Runtime MatMulNBits, OpenVINO stateful IR + NNCF.

int4 is asymmetric in blocks of 32 along the input dimension unless `--symmetric`/`--block-size`/`--group-size`
say otherwise (measured on SmolLM2-135M: perplexity +22 % against +26-27 % for symmetric blocks). With
`--calibration TEXT` the int4 weights come from NNCF's AWQ and scale estimation, a quarter (ONNX Runtime) or a fifth
(OpenVINO) of the layers int8 (data_aware.py: +6.8 % on ONNX Runtime, +6.2 % on OpenVINO).

ONNX Runtime: every MatMul with a constant weight becomes MatMulNBits (round to nearest), or a blocked int4
DequantizeLinear that ONNX Runtime fuses into MatMulNBits when it loads the graph (NNCF's data-aware route);
`--accuracy-level` 4 lets the kernel compute in int8 with VNNI (0.7 points of perplexity on the AWQ artifact, where
levels 0 and 1 decode 16x slower). For int4 the LM head goes to int8 (block 128; measured on SmolLM2-135M: perplexity
+26 % instead of +35 % with it in int4, for 3 % more bytes), and the token embedding of every precision becomes
GatherBlockQuantized int8 unless `--keep-embeddings` (gather_int8: the table in 4 bits cost 0.9 points).

OpenVINO: the IR converted from PyTorch is made stateful with batch 1 (each past_key_values.N input paired with its
present.N output becomes an internal variable, in the shape the CPU plugin fuses with attention: openvino_export.py),
then NNCF `compress_weights` with NNCF's default of int8 for the embedding and the LM head; int8: asymmetric per
channel.
"""
from __future__ import annotations

import time
from pathlib import Path

from kiln._deps import require
from kiln.llm.export import DATA_NAME
from kiln.llm.source import DecoderSpec
from kiln.quiet import quiet
from kiln.signature import default_opset

BITS = {"int4-weights": 4, "int8-weights": 8}
# Block sizes measured on SmolLM2-135M here (docs/benchmarks.md): 32 keeps int4 greedy continuations closest
# to fp32 at a small cost in bytes; int8 loses nothing measurable at 128.
DEFAULT_BLOCK = {4: 32, 8: 128}
SESSION_ACCURACY_LEVEL = "session.qdq_matmulnbits_accuracy_level"  # for the DequantizeLinear -> MatMulNBits fusion
QUANTIZED_OPSET = 21


def lm_head(model) -> str | None:
    """The MatMul producing `logits` (the last MatMul feeding the graph output), if there is one."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get("logits")
    while node is not None and node.op_type != "MatMul" and node.input:
        node = producers.get(node.input[0])
    return node.name if node is not None and node.op_type == "MatMul" else None


def untie_embeddings(model) -> int:
    """Give a Gather that reads the LM head's weight through a Transpose (tied embeddings, as the model builder
    writes them) its own transposed copy; return how many were untied.

    Otherwise quantizing the LM head leaves its fp32 weight in the graph for the Transpose: 113 MB of
    SmolLM2's 214. Each copy can then be quantized for its own use (a row gather, a matrix product).
    """
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    untied = 0
    for node in model.graph.node:
        transpose = producers.get(node.input[0]) if node.op_type == "Gather" else None
        if transpose is None or transpose.op_type != "Transpose" or transpose.input[0] not in initializers:
            continue
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [1, 0])
        weight = numpy_helper.to_array(initializers[transpose.input[0]])
        if weight.ndim != 2 or perm != [1, 0]:
            continue
        table = numpy_helper.from_array(weight.T.copy(), name=transpose.input[0] + ".embedding")
        model.graph.initializer.append(table)
        node.input[0] = table.name
        consumers[transpose.output[0]] -= 1
        if consumers[transpose.output[0]] == 0 and transpose.output[0] not in {o.name for o in model.graph.output}:
            model.graph.node.remove(transpose)
        untied += 1
    return untied


def group_size_for(spec: DecoderSpec) -> int:
    """NNCF's int4 groups must divide every layer's input channels: 32 as on ONNX Runtime (measured on SmolLM2:
    asymmetric groups of 32 +22 % perplexity, symmetric groups of 64 +27 %), else smaller."""
    return next(g for g in (32, 16, 8) if spec.hidden_size % g == 0 and spec.intermediate_size % g == 0)


def weight_bytes(model: Path) -> int:
    """The model's files: model.onnx + model.onnx.data, or model.xml + model.bin."""
    companions = (model.with_name(model.name + ".data"), model.with_suffix(".bin"))
    return model.stat().st_size + sum(p.stat().st_size for p in companions if p.is_file())


def is_symmetric(options: dict, bits: int, backend: str) -> bool:
    """--symmetric as given, else each runtime's better default: int4 asymmetric on both (SmolLM2 perplexity +22 %
    against +26-27 % symmetric), int8 symmetric blocks on ONNX Runtime (MatMulNBits), int8 asymmetric per channel
    on OpenVINO (NNCF's default)."""
    given = options.get("symmetric")
    return given if given is not None else (bits == 8 and backend == "onnxruntime")


def compile_onnxruntime(graph: Path, out: Path, precision: str, options: dict, feeds: list[dict] | None = None) -> dict:
    """Write out/model.onnx (+ data) in `precision`; return what was done. `feeds` (calibration prompts in the
    graph's inputs) make int4 data-aware."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if precision == "fp32":
        for name in ("model.onnx", DATA_NAME):
            shutil.copyfile(graph.parent / name, out / name)
        return {"precision": "fp32", "seconds": round(time.perf_counter() - start, 3)}
    import onnx

    bits = BITS[precision]
    block = options.get("block_size") or DEFAULT_BLOCK[bits]
    level = options.get("accuracy_level", 4)
    symmetric = is_symmetric(options, bits, "onnxruntime")
    embeddings = not options.get("keep_embeddings")
    # The quantizer stamps opset 21 (int4 types) on the graph; ops whose signature changed since the export's
    # opset (ReduceMean's axes became an input in 18) must be converted first or the graph is invalid. The
    # converter serialises the model, so it runs on the structure alone (weights stay in the data file: a
    # protobuf cannot exceed 2 GB), and the weights are read in afterwards.
    model = onnx.load(str(graph), load_external_data=False)
    if default_opset(model) < QUANTIZED_OPSET:
        model = onnx.version_converter.convert_version(model, QUANTIZED_OPSET)
    onnx.external_data_helper.load_external_data_for_model(model, str(graph.parent))
    untie_embeddings(model)
    head = lm_head(model)
    data_aware = None
    if bits == 4 and feeds:
        model, data_aware = _data_aware_int4(model, head, block, symmetric, level, options, feeds)
    if bits == 4 and head:
        # The LM head in int8 first (block 128): measured on SmolLM2, it halves the int4 perplexity loss of
        # quantizing it to int4 for 3 % more bytes; the int4 pass below then leaves it alone.
        model = _nbits(model, 8, 128, True, level, exclude=[n.name for n in model.graph.node
                                                             if n.op_type == "MatMul" and n.name != head])
    if not data_aware:
        model = _nbits(model, bits, block, symmetric, level)
    if embeddings:
        gather_int8(model)
    counts = {op: sum(n.op_type == op for n in model.graph.node)
              for op in ("MatMulNBits", "DequantizeLinear", "GatherBlockQuantized", "MatMul", "Gather")}
    (out / DATA_NAME).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(out / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_NAME, size_threshold=1024)
    details = {"precision": precision, "tool": f"onnxruntime MatMulNBitsQuantizer ({bits}-bit)", "bits": bits,
               "method": "round to nearest", "block_size": block, "accuracy_level": level, "symmetric": symmetric,
               "embeddings": "GatherBlockQuantized 8-bit" if counts["GatherBlockQuantized"] else "kept fp32",
               "lm_head": "MatMulNBits 8-bit" if head and bits == 4 else f"MatMulNBits {bits}-bit", "nodes": counts,
               "seconds": round(time.perf_counter() - start, 3)}
    details.update(data_aware or {})
    return details


def gather_int8(model) -> list[str]:
    """Each table a Gather reads rows of (the token embedding; GPT-2's position table too) as GatherBlockQuantized
    uint8, symmetric blocks along the row (zero point 128, the op's default): the Gathers ONNX Runtime's quantizer
    would write in int4. ONNX Runtime's quantizer writes a Gather in 4 bits only, which
    cost SmolLM2-135M 0.9 points of the int4 artifact's perplexity (+9.4 % against +8.5 % with the table in fp32,
    pydoc prose); NNCF keeps it int8 on OpenVINO too. Returns the tables rewritten."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    done = []
    for node in [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in initializers]:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        table = numpy_helper.to_array(initializers[node.input[0]])
        block = next((b for b in (128, 64, 32, 16) if table.ndim == 2 and table.shape[1] % b == 0), None)
        if block is None or attributes.get("axis", 0) != 0 or table.dtype != np.float32:
            continue
        blocks = table.reshape(table.shape[0], -1, block)
        scales = np.abs(blocks).max(axis=-1) / 127.0
        scales[scales == 0] = 1.0
        quantized = (np.clip(np.rint(blocks / scales[..., None]), -127, 127) + 128).astype(np.uint8)
        name = node.input[0]
        model.graph.initializer.remove(initializers[name])
        model.graph.initializer.extend([numpy_helper.from_array(quantized.reshape(table.shape), f"{name}_Q8"),
                                        numpy_helper.from_array(scales.astype(np.float32), f"{name}_scales")])
        replacement = onnx.helper.make_node("GatherBlockQuantized", [f"{name}_Q8", node.input[1], f"{name}_scales"],
                                            list(node.output), name=f"{node.name}_Q8", domain="com.microsoft",
                                            bits=8, block_size=block, gather_axis=0, quantize_axis=1)
        position = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(position, replacement)
        done.append(node.name)
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return done


def _nbits(model, bits: int, block: int, symmetric: bool, level: int, include=None, exclude=None):
    """One pass of ONNX Runtime's MatMulNBits quantizer over the nodes chosen; returns the rewritten model."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=symmetric, accuracy_level=level,
                                     op_types_to_quantize=("MatMul",), nodes_to_include=include,
                                     nodes_to_exclude=exclude)
    with quiet():
        quantizer.process()
    return quantizer.model.model


def _data_aware_int4(model, head: str | None, block: int, symmetric: bool, level: int, options: dict,
                     feeds: list[dict]) -> tuple:
    """NNCF's AWQ + scale estimation on the fp32 graph it can run for its statistics, the LM head and the embedding
    left for the passes after it (which give them the formats ONNX Runtime has kernels for); NNCF's int8 share
    (--ratio) moved to MatMulNBits 8-bit. Returns the model and what the compile record adds."""
    import nncf

    from kiln.llm.data_aware import DATA_AWARE_RATIO, nncf_options

    ratio = options.get("ratio") or DATA_AWARE_RATIO["onnxruntime"]
    tables = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0].endswith(".embedding")]
    originals = _matmul_weights(model)
    mode = nncf.CompressWeightsMode.INT4_SYM if symmetric else nncf.CompressWeightsMode.INT4_ASYM
    with quiet():
        model = nncf.compress_weights(model, mode=mode, group_size=block, ratio=ratio, **nncf_options(feeds),
                                      ignored_scope=nncf.IgnoredScope(names=[n for n in [head, *tables] if n],
                                                                      validate=False))
    int8_layers = _requantize_int8_layers(model, originals)
    if int8_layers:
        model = _nbits(model, 8, 32, True, level, include=int8_layers,
                       exclude=[n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in int8_layers])
    return model, {"method": "AWQ + scale estimation (NNCF)", "ratio": ratio, "int8_layers": len(int8_layers),
                   "tool": f"nncf.compress_weights {nncf.__version__} (int4 DequantizeLinear blocks, fused into "
                           "MatMulNBits by ONNX Runtime at load) + onnxruntime MatMulNBitsQuantizer (LM head, embedding)"}


def _matmul_weights(model) -> dict:
    """A copy of each MatMul's constant weight, by node name."""
    import onnx

    initializers = {t.name: t for t in model.graph.initializer}
    copies = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in initializers:
            copies[node.name] = onnx.TensorProto()
            copies[node.name].CopyFrom(initializers[node.input[1]])
    return copies


def _requantize_int8_layers(model, originals: dict) -> list[str]:
    """NNCF writes the layers `--ratio` leaves in int8 as per-channel int8 DequantizeLinear, which ONNX Runtime runs
    by dequantizing the whole weight at every call (measured: 23 tokens/s instead of 160 at ratio 0.8). Give those
    MatMuls their fp32 weights back, to be quantized into MatMulNBits 8-bit blocks; return their names."""
    import onnx

    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {t.name: t for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        dq = producers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in initializers:
            continue
        if initializers[dq.input[0]].data_type != onnx.TensorProto.INT8 and \
                initializers[dq.input[0]].data_type != onnx.TensorProto.UINT8:
            continue
        weight = originals.get(node.name)
        if weight is None:
            continue
        model.graph.initializer.append(weight)
        node.input[1] = weight.name
        model.graph.node.remove(dq)
        names.append(node.name)
    used = {name for node in model.graph.node for name in node.input}
    for tensor in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(tensor)
    return names


def compile_openvino(graph: Path, out: Path, precision: str, options: dict, spec: DecoderSpec,
                     windows: list | None = None) -> dict:
    """Write `out` (an .xml, with its .bin): the exported IR made stateful (attention fused with the cache where the CPU
    plugin does it, openvino_export.py), weights compressed for int8/int4; `windows` (calibration token windows)
    make int4 data-aware."""
    ov = require("openvino", why="the OpenVINO backend")
    from kiln.llm.openvino_export import stateful_model

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    model, attention = stateful_model(graph, spec)
    details = {"precision": precision, "stateful": True, "variables": 2 * spec.layers, **attention}
    if precision != "fp32":
        nncf = require("nncf", why="OpenVINO weight compression")
        bits = BITS[precision]
        if bits == 4:
            group = options.get("group_size") or group_size_for(spec)
            symmetric = is_symmetric(options, bits, "openvino")
            mode = nncf.CompressWeightsMode.INT4_SYM if symmetric else nncf.CompressWeightsMode.INT4_ASYM
            extra, ratio = {}, options.get("ratio") or 1.0
            if windows:
                from kiln.llm.data_aware import DATA_AWARE_RATIO, nncf_options, openvino_feeds

                extra = nncf_options(openvino_feeds(windows, {p.get_any_name() for p in model.inputs}))
                ratio = options.get("ratio") or DATA_AWARE_RATIO["openvino"]
            with quiet():
                model = nncf.compress_weights(model, mode=mode, group_size=group, ratio=ratio, **extra)
            details.update(tool=f"nncf.compress_weights {nncf.__version__}", mode=mode.value, group_size=group,
                           method="AWQ + scale estimation (NNCF)" if windows else "round to nearest",
                           ratio=ratio, embeddings_and_lm_head="int8 (NNCF's default)")
        else:
            with quiet():
                mode = nncf.CompressWeightsMode.INT8_SYM if is_symmetric(options, bits, "openvino") else \
                    nncf.CompressWeightsMode.INT8_ASYM
                model = nncf.compress_weights(model, mode=mode)
            details.update(tool="nncf.compress_weights", mode=mode.value, group_size=-1)
    ov.save_model(model, str(out), compress_to_fp16=False)
    details["seconds"] = round(time.perf_counter() - start, 3)
    return details
