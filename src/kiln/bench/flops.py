"""FLOPs and bytes moved per node, for the roofline report.

Nodes come from ONNX graphs, the ONNX Runtime profiler and OpenVINO runtime models, so the core (`node_cost`) is a
function of op type, tensor shapes/dtypes and a few attributes, never of a graph; OpenVINO layer types share the ONNX
ops' tables. Counts are estimates by these rules (a multiply-add is 2 FLOPs; integer ops count the same, as "ops"):

matmul     MatMul, FusedMatMul, MatMulInteger, QLinearMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul,
           GemmFastGelu, FullyConnected: 2 * numel(out) * K, K = A.shape[-1] (A = input 0; A.shape[-2] under transA, or
           for an OpenVINO MatMul whose A.shape[-2] != out.shape[-2]); batch dims broadcast through the output.
           MatMulNBits: K = attrs["K"]; its packed int4 weights count in bytes at the sizes given. Gemm, FusedGemm,
           QGemm: 2*M*N*K, M, N from the output, K = numel(A) / M. A (non-empty) bias: + numel(out); GemmFastGelu +8.
conv       Conv, FusedConv, Nhwc(Fused)Conv, ConvInteger, QLinearConv (W = input 3), Convolution, GroupConvolution:
           2 * numel(out) * prod(W.shape[1:]): W is [Cout, Cin/group, k...], so grouped and depthwise convs come out
           right (OpenVINO's [G, Cout/G, Cin/G, k...]: W.shape[2:]). ConvTranspose, Deconvolution: each input element
           meets Cout/group * prod(k) weights and W is [Cin, Cout/group, k...], so 2 * numel(X) * prod(W.shape[1:]).
           Bias, FusedConv's sum input: + numel(out) each; a fused activation: + numel(out) * its factor below.
attention  com.microsoft Attention, QAttention: QKV projection 2*B*S*H_in*H_out (+ B*S*H_out bias), scores 2*B*S*L*Hq,
           context 2*B*S*L*Hv, softmax 5*B*heads*S*L (heads = num_heads, else 1; Hq, Hv = qkv_hidden_sizes, else
           H_out/3; L = S + past). MultiHeadAttention, GroupQueryAttention, ONNX Attention, ScaledDotProductAttention:
           the same without projection; with [..., S, E] inputs every leading dim (batch, heads) is batch. L is the
           present-key output's dim -2 when there is one. Masks, attention bias and the scale are not counted.
elementwise numel(out) * 1 for arithmetic, compare, select, Cast, Relu, Clip, Sqrt, OpenVINO Eltwise/Subgraph/Math
           (fused or unknown algorithms); 2 HardSigmoid, Shrink, BiasAdd; 3 HardSwish, Softsign, RotaryEmbedding,
           RoPE; 4 Exp, Log, Sigmoid, Tanh, Erf, Pow, Softplus, Elu, Swish, trig; 8 Gelu, BiasGelu, FastGelu,
           QuickGelu, Mish. QLinearX (QLinearAdd, QLinearSigmoid, ...) follows X.
normalization 8 * numel(out): (Simplified)LayerNormalization, RMSNormalization, Batch-, Instance-, GroupNormalization,
           MVN, NormalizeL2; Skip* 9; EmbedLayerNormalization 10 (three embeddings summed).
softmax    Softmax, LogSoftmax: 5 * numel(out).
reduction  Reduce*, ArgMax/Min, GlobalAverage/MaxPool, CumSum, TopK: numel(input). MaxPool, AveragePool, LpPool,
           Pooling: numel(out) * prod(kernel_shape), numel(input) without the attribute (OpenVINO).
quantize   QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear: 2 * numel(out); FakeQuantize 4 (both ways).
data-movement Transpose, Gather*, Concat, Slice, Split, Expand, Tile, Pad, Scatter*, Reorder, Resize...: 0 FLOPs (Resize
           in linear or cubic mode 4 * numel(out); OpenVINO Interpolate has no mode: nearest). Reshape, Squeeze,
           Unsqueeze, Flatten, Identity, Dropout, Shape, Size are views or metadata: 0 bytes too.
other      Unknown ops: 0 FLOPs, bytes counted. Input/Output/Const/Constant: 0 and 0. Shapes that do not fit an op's
           rule give 0 FLOPs rather than an error.

Bytes: every input (None, an absent or unsized tensor: 0) and output, numel * element size; int4/uint4/float4 half a
byte (rounded up per tensor), bool and float8 one. Gather*, Slice and EmbedLayerNormalization's embedding tables count
only the elements read: at most numel(out), not the whole table. Weights count like activations (read once per
inference). Unknown dtypes count 0.

compute_dtype: "int8" for MatMulInteger, MatMulIntegerToFloat, DynamicQuantizeMatMul, ConvInteger, QAttention, QGemm,
QLinear* and matmul/conv/attention nodes whose input 0 is int8/uint8; else the first floating dtype of the inputs then
outputs (so MatMulNBits computes in its activation dtype: int4 weights are dequantized on the fly); else the first
known dtype (integer shape arithmetic); else "float32".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

_ONNX_ENUM = dict(enumerate(
    "undefined float32 uint8 int8 uint16 int16 int32 int64 string bool float16 float64 uint32 uint64 complex64 "
    "complex128 bfloat16 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz uint4 int4 float4_e2m1fn "
    "float8_e8m0fnu uint2 int2".split()))
_ENUM = {name: enum for enum, name in _ONNX_ENUM.items()}
_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "bool": 8, "float8_e4m3fn": 8,
         "float8_e4m3fnuz": 8, "float8_e5m2": 8, "float8_e5m2fnuz": 8, "float8_e8m0fnu": 8, "float4_e2m1fn": 4,
         "nf4": 4, "complex64": 64, "complex128": 128,
         **{f"{sign}int{b}": b for sign in ("", "u") for b in (2, 4, 8, 16, 32, 64)}}
_FLOATS = {d for d in _BITS if d.startswith(("float", "bfloat"))}
# Keys are lower case without "_", "-" or spaces: ORT profiler names, OpenVINO element types, short forms.
_ALIASES = {**{d.replace("_", ""): d for d in (*_BITS, "string")},
            **{f"{p}{b}": f"{n}{b}" for p, n in (("i", "int"), ("u", "uint"), ("f", "float"), ("fp", "float"))
               for b in (2, 4, 8, 16, 32, 64) if f"{n}{b}" in _BITS},
            "float": "float32", "double": "float64", "half": "float16", "mlfloat16": "float16", "bf16": "bfloat16",
            "int4x2": "int4", "uint4x2": "uint4", "boolean": "bool", "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2",
            "f8e8m0": "float8_e8m0fnu", "f4e2m1": "float4_e2m1fn", "float4e2m1": "float4_e2m1fn"}


def dtype_name(text) -> str:
    """Numpy-style dtype name from an ORT profiler name, an ONNX TensorProto enum int or an OpenVINO element type.

    Unknown names come back lower-cased (they then count 0 bytes) so a report never stops on an exotic dtype.
    """
    if isinstance(text, (int, np.integer)):
        return _ONNX_ENUM.get(int(text), "undefined")
    if not isinstance(text, str):
        try:
            return np.dtype(text).name
        except TypeError:
            text = str(text)
    s = re.sub(r"^tensor\((.*)\)$", r"\1", text.strip())  # ORT NodeArg.type: "tensor(float)"
    s = re.sub(r"^<Type: '(.*)'>$", r"\1", s).lower()  # str(openvino.Type)
    return _ALIASES.get(re.sub(r"[_\-\s]", "", s), s)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # concrete dims
    dtype: str  # normalised with dtype_name, so "f32", "float" or 1 all become "float32"
    constant: bool = False  # weight/initializer (read once per inference)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))


@dataclass(frozen=True)
class NodeCost:
    flops: int
    bytes: int
    kind: str
    compute_dtype: str

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved: where the node sits against the machine's ridge point."""
        return self.flops / self.bytes if self.bytes else 0.0


def _numel(t: TensorInfo | None) -> int:
    return 0 if t is None else math.prod(max(d, 0) for d in t.shape)


def tensor_bytes(t: TensorInfo | None, cap: int | None = None) -> int:
    n = _numel(t) if cap is None else min(_numel(t), cap)
    return -(-n * _BITS.get(t.dtype, 0) // 8) if t is not None else 0


def _at(seq: list, i: int | None):
    return seq[i] if i is not None and 0 <= i < len(seq) else None


def _has(seq: list, i: int | None) -> bool:
    return _numel(_at(seq, i)) > 0  # an optional input (bias, sum) that is there, not an empty placeholder


_ELEMENTWISE = {
    **dict.fromkeys("Add Sub Mul Div Relu Abs Neg Max Min Sum Mean Clip Where Cast CastLike Equal Less Greater Sqrt "
                    "LessOrEqual GreaterOrEqual And Or Not Xor Sign Floor Ceil Round Mod PRelu LeakyRelu Reciprocal "
                    "ThresholdedRelu BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot IsNaN IsInf Eltwise Subgraph "
                    "Math Convert Select".split(), 1),
    **dict.fromkeys("HardSigmoid Shrink BiasAdd".split(), 2),
    **dict.fromkeys("HardSwish Softsign RotaryEmbedding RoPE".split(), 3),
    **dict.fromkeys("Exp Log Sigmoid Tanh Erf Pow Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Softplus Elu "
                    "Selu Celu Swish".split(), 4),
    **dict.fromkeys("Gelu BiasGelu FastGelu QuickGelu Mish".split(), 8),
}
_NORMALIZATION = {
    **dict.fromkeys("LayerNormalization SimplifiedLayerNormalization RMSNormalization BatchNormalization "
                    "InstanceNormalization GroupNormalization MeanVarianceNormalization MVN NormalizeL2 RMS "
                    "LpNormalization LRN GroupNorm".split(), 8),
    **dict.fromkeys("SkipLayerNormalization SkipSimplifiedLayerNormalization SkipGroupNorm".split(), 9),
    "EmbedLayerNormalization": 10,
}
_SOFTMAX = {"Softmax", "LogSoftmax", "SoftMax", "BiasSoftmax"}
_REDUCTION = set("ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp "
                 "ReduceSumSquare Reduce ArgMax ArgMin GlobalAveragePool GlobalMaxPool GlobalLpPool AdaptivePooling "
                 "CumSum TopK".split())
_POOLING = {"MaxPool", "AveragePool", "LpPool", "Pooling"}
_QUANTIZE = {"QuantizeLinear": 2, "DequantizeLinear": 2, "DynamicQuantizeLinear": 2, "FakeQuantize": 4}
_VIEWS = set("Reshape Squeeze Unsqueeze Flatten Identity Dropout Shape Size ShapeOf".split())  # 0 bytes too
_DATA_MOVEMENT = set("Transpose Gather GatherElements GatherND Concat Concatenation Slice StridedSlice Split Expand "
                     "Broadcast Tile Pad ScatterND ScatterElements Scatter ScatterUpdate DepthToSpace SpaceToDepth "
                     "ScatterNDUpdate ScatterElementsUpdate Reorder ConstantOfShape Range Trilu OneHot Compress "
                     "ReverseSequence Resize Upsample Interpolate".split())
_NOTHING = {"Input", "Output", "Const", "Constant", "Parameter", "Result"}
_GATHERED = {"Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Slice": (0,), "StridedSlice": (0,),
             "EmbedLayerNormalization": (2, 3, 4)}  # inputs read only where indexed
# op -> (index of B, index of bias); None = no such input
_MATMUL = {"MatMul": (1, None), "FusedMatMul": (1, None), "MatMulInteger": (1, None), "QLinearMatMul": (3, None),
           "MatMulIntegerToFloat": (1, 6), "DynamicQuantizeMatMul": (1, 4), "MatMulNBits": (1, 5),
           "GemmFastGelu": (1, 2), "FullyConnected": (1, 2)}
# op -> (index of W, index of bias)
_CONV = {"Conv": (1, 2), "FusedConv": (1, 2), "NhwcConv": (1, 2), "NhwcFusedConv": (1, 2), "ConvInteger": (1, None),
         "QLinearConv": (3, 8), "Convolution": (1, 2), "GroupConvolution": (1, 2), "ConvTranspose": (1, 2),
         "Deconvolution": (1, None)}
_ATTENTION = {"Attention", "QAttention", "MultiHeadAttention", "GroupQueryAttention", "ScaledDotProductAttention"}
_GEMM = {"Gemm", "FusedGemm", "QGemm"}
_PER_ELEMENT = {**_ELEMENTWISE, **_NORMALIZATION, **_QUANTIZE, **dict.fromkeys(_SOFTMAX, 5)}
_INT8_OPS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "ConvInteger", "QAttention", "QGemm"}


def _matmul(op: str, ins: list, out: TensorInfo | None, attrs: dict) -> int:
    b_index, bias_index = _MATMUL[op]
    a, b = _at(ins, 0), _at(ins, b_index)
    k = int(attrs.get("K", 0)) if op == "MatMulNBits" else 0
    if not k and a is not None and a.shape:
        transposed = attrs.get("transA", 0) or (op == "MatMul" and out is not None and len(a.shape) >= 2
                                                and len(out.shape) >= 2 and a.shape[-2] != out.shape[-2])
        k = a.shape[-2] if transposed else a.shape[-1]
    if not k and b is not None and b.shape and op != "FullyConnected":
        k = b.shape[-2] if len(b.shape) >= 2 else b.shape[0]
    return _numel(out) * (2 * k + _has(ins, bias_index) + 8 * (op == "GemmFastGelu"))


def _gemm(ins: list, out: TensorInfo, attrs: dict) -> int:
    (m, n), a = out.shape, ins[0]
    k = _numel(a) // m if a is not None else ins[1].shape[1 if attrs.get("transB", 0) else 0]
    return 2 * m * n * k + (m * n if _has(ins, 2) else 0) + m * n * _ELEMENTWISE.get(attrs.get("activation", ""), 0)


def _conv(op: str, ins: list, out: TensorInfo | None, attrs: dict) -> int:
    w_index, bias_index = _CONV[op]
    x, w = _at(ins, 0), ins[w_index]
    grouped = x is not None and len(w.shape) == len(x.shape) + 1  # OpenVINO [G, Cout/G, Cin/G, k...]
    per_element = math.prod(w.shape[2:] if grouped else w.shape[1:])
    flops = 2 * (_numel(x) if op in ("ConvTranspose", "Deconvolution") else _numel(out)) * per_element
    flops += _numel(out) * (_has(ins, bias_index) + (op in ("FusedConv", "NhwcFusedConv") and _has(ins, 3)))
    return flops + _numel(out) * (_ELEMENTWISE.get(attrs["activation"], 1) if attrs.get("activation") else 0)


def _core(batch: int, s: int, kv: int, d_qk: int, d_v: int, heads: int) -> int:
    """Scores QK^T, context PV and the softmax in between."""
    return 2 * batch * s * kv * d_qk + 2 * batch * s * kv * d_v + 5 * batch * heads * s * kv


def _attention(op: str, ins: list, outs: list, attrs: dict, domain: str) -> int:
    q, k, out, present = _at(ins, 0), _at(ins, 1), _at(outs, 0), _at(outs, 1)
    heads = int(attrs.get("num_heads") or attrs.get("q_num_heads") or 1)
    kv_known = present.shape[-2] if present is not None and len(present.shape) >= 4 else 0
    if op == "ScaledDotProductAttention" or (op == "Attention" and len(q.shape) == 4):
        v, past = _at(ins, 2), _at(ins, 4) if op == "Attention" else None
        *lead, s, e = q.shape
        kv = kv_known or k.shape[-2] + (past.shape[-2] if past is not None else 0)
        return _core(math.prod(lead), s, kv, e, v.shape[-1] if v is not None else e, 1)
    if op == "QAttention" or (op == "Attention" and (domain == "com.microsoft" or len(k.shape) == 2)):
        (b, s, h_in), h_out = q.shape, k.shape[1]
        proj = 2 * b * s * h_in * h_out + (b * s * h_out if _has(ins, 2) else 0)
        hq, _, hv = attrs.get("qkv_hidden_sizes") or [h_out // 3] * 3
        past = _at(ins, 8 if op == "QAttention" else 4)
        return proj + _core(b, s, kv_known or s + (past.shape[3] if past is not None else 0), hq, hv, heads)
    # MultiHeadAttention, GroupQueryAttention, ONNX Attention with 3-D q: no projection inside.
    if len(q.shape) == 5:  # packed QKV [B, S, N, 3, H]
        (b, s, n, _, h), kv = q.shape, q.shape[1]
        d_q = n * h
    else:
        (b, s, d_q), kv = q.shape, q.shape[1]
        if k is None and out is not None:  # GQA packed QKV: q holds q, k and v; the output is q-sized
            d_q = out.shape[-1]
        elif k is not None:
            kv = k.shape[2] if len(k.shape) == 4 else k.shape[1]  # [B, N, L, H] or [B, L, D] / [B, L, N, 2, H]
        past = _at(ins, {"MultiHeadAttention": 6, "GroupQueryAttention": 3}.get(op, 4))
        kv += past.shape[2] if past is not None and len(past.shape) == 4 else 0
    return _core(b, s, kv_known or kv, d_q, out.shape[-1] if out is not None else d_q, heads)


def _base(op: str) -> str:
    """QLinearAdd, QLinearSigmoid, ...: the float op's rule (QLinearMatMul and QLinearConv have their own)."""
    return op[len("QLinear"):] if op.startswith("QLinear") and op not in _MATMUL and op not in _CONV else op


def _kind(op: str) -> str:
    op = _base(op)
    for kind, table in (("matmul", _MATMUL), ("matmul", _GEMM), ("conv", _CONV), ("attention", _ATTENTION),
                        ("elementwise", _ELEMENTWISE), ("normalization", _NORMALIZATION), ("softmax", _SOFTMAX),
                        ("reduction", _REDUCTION), ("reduction", _POOLING), ("quantize", _QUANTIZE),
                        ("data-movement", _DATA_MOVEMENT), ("data-movement", _VIEWS)):
        if op in table:
            return kind
    return "other"


def _flops(op: str, kind: str, ins: list, outs: list, attrs: dict, domain: str) -> int:
    op, out, x = _base(op), _at(outs, 0), _at(ins, 0)
    if op in _MATMUL:
        return _matmul(op, ins, out, attrs)
    if op in _GEMM:
        return _gemm(ins if op != "QGemm" else [x, _at(ins, 3), _at(ins, 6)], out, attrs)
    if op in _CONV:
        return _conv(op, ins, out, attrs)
    if op in _ATTENTION:
        return _attention(op, ins, outs, attrs, domain)
    if op in _POOLING:
        kernel = attrs.get("kernel_shape")
        return _numel(out) * math.prod(kernel) if kernel else _numel(x)
    if op in ("Resize", "Upsample"):
        return 4 * _numel(out) if str(attrs.get("mode", "nearest")) in ("linear", "cubic") else 0
    if op in _PER_ELEMENT:
        return _PER_ELEMENT[op] * _numel(out)
    return _numel(x) if kind == "reduction" else 0


def _compute_dtype(op: str, kind: str, ins: list, outs: list) -> str:
    x = _at(ins, 0)
    if op in _INT8_OPS or op.startswith("QLinear") or (
            kind in ("matmul", "conv", "attention") and x is not None and x.dtype in ("int8", "uint8")):
        return "int8"
    known = [t.dtype for t in (*ins, *outs) if t is not None]
    return next((d for d in known if d in _FLOATS), known[0] if known else "float32")


def node_cost(op_type: str, inputs: list[TensorInfo | None], outputs: list[TensorInfo | None],
              attrs: dict | None = None, domain: str = "") -> NodeCost:
    """Cost of one node from its op type, tensors and attributes (module docstring: the rules)."""
    ins, outs, kind = list(inputs), list(outputs), _kind(op_type)
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in (attrs or {}).items()}  # raw onnx string attrs
    try:
        flops = _flops(op_type, kind, ins, outs, attrs, domain)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, ZeroDivisionError):
        flops = 0  # shapes that do not fit the rule: count nothing rather than stop the report
    read = {i: _numel(outs[0]) for i in _GATHERED.get(op_type, ()) if _at(outs, 0) is not None}
    nbytes = sum(tensor_bytes(t, read.get(i)) for i, t in enumerate(ins)) + sum(tensor_bytes(t) for t in outs)
    nbytes = 0 if op_type in _NOTHING or op_type in _VIEWS else nbytes
    return NodeCost(int(flops), int(nbytes), kind, _compute_dtype(op_type, kind, ins, outs))


def openvino_layer_cost(layer_type: str, inputs: list[TensorInfo | None],
                        outputs: list[TensorInfo | None]) -> NodeCost:
    """Cost of one layer of an OpenVINO runtime model (rt_info "layerType"): its names share the ONNX ops' tables."""
    return node_cost(layer_type, inputs, outputs)


def _tensor_info(value_type) -> TensorInfo | None:
    tt = value_type.tensor_type if value_type.HasField("tensor_type") else None
    if tt is None or not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
        return None  # not a tensor, or a dim left symbolic
    return TensorInfo(tuple(d.dim_value for d in tt.shape.dim), dtype_name(tt.elem_type))


def _attributes(node) -> dict:
    from onnx import AttributeProto, helper

    def plain(v):
        return v.decode() if isinstance(v, bytes) else [plain(x) for x in v] if isinstance(v, list) else v

    skip = {AttributeProto.GRAPH, AttributeProto.GRAPHS}  # subgraphs are no use to a cost
    return {a.name: plain(helper.get_attribute_value(a)) for a in node.attribute if a.type not in skip}


_SAME_SHAPE = set("BiasGelu FastGelu Gelu QuickGelu BiasAdd BiasSoftmax RotaryEmbedding LayerNormalization "
                  "SimplifiedLayerNormalization SkipLayerNormalization SkipSimplifiedLayerNormalization QLinearAdd "
                  "QLinearMul QLinearSigmoid QLinearLeakyRelu QLinearSoftmax".split())


def _contrib_outputs(op: str, ins: list, attrs: dict) -> list[TensorInfo | None]:
    """Outputs of the ONNX Runtime contrib ops kiln's fusions and quantizers emit (ONNX has no shape function)."""
    x = ins[0]
    if op in ("QuantizeLinear", "DequantizeLinear"):
        zero_point = _at(ins, 2)
        dtype = ins[1].dtype if op == "DequantizeLinear" else zero_point.dtype if zero_point is not None else "uint8"
        return [TensorInfo(x.shape, dtype)]
    if op in _SAME_SHAPE:
        return [x, None, None, x] if op.startswith("Skip") else [x]  # Skip*: output 3 is the residual sum
    if op == "MatMulNBits":
        return [TensorInfo((*x.shape[:-1], attrs["N"]), x.dtype)]
    if op in _MATMUL:
        b = ins[1]
        m, n = x.shape[-1 if attrs.get("transA") else -2], b.shape[-2 if attrs.get("transB") else -1]
        dtype = ins[2].dtype if op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul") else x.dtype
        return [TensorInfo((*np.broadcast_shapes(x.shape[:-2], b.shape[:-2]), m, n), dtype)]
    if op in ("Attention", "QAttention"):
        hidden = (attrs.get("qkv_hidden_sizes") or [0, 0, ins[1].shape[1] // 3])[2]
        return [TensorInfo((*x.shape[:2], hidden), x.dtype if op == "Attention" else ins[3].dtype)]
    if op == "MultiHeadAttention":  # value-sized: [B, L, Dv] or [B, N, L, H]; packed QKV [B, S, N, 3, H]: N * H
        v = _at(ins, 2)
        hidden = (x.shape[2] * x.shape[4] if len(x.shape) == 5 else x.shape[2] if v is None
                  else v.shape[2] if len(v.shape) == 3 else v.shape[1] * v.shape[3])
        return [TensorInfo((*x.shape[:2], hidden), x.dtype)]
    if op == "EmbedLayerNormalization":
        out = TensorInfo((*x.shape, ins[2].shape[1]), ins[2].dtype)
        return [out, TensorInfo(x.shape[:1], "int32"), out]
    return []


_FOLD_LIMIT = 1 << 16  # elements: shape arithmetic and position ids are folded, activations and weights never are


def _infer(m: onnx.ModelProto) -> dict:
    """Type of every tensor, node by node: ONNX's shape functions given the values of small tensors, which
    infer_shapes(data_prop=True) loses on chains like Shape -> Squeeze -> Range (MiniLM's position ids), and with them
    every dim downstream. Shape/Size of sized tensors, and nodes fed only small known values, are evaluated."""
    from onnx import TensorProto, TypeProto, defs, helper, numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator

    opsets = {o.domain or "": o.version for o in m.opset_import}
    types = {v.name: v.type for v in m.graph.input}
    values = {}
    for t in m.graph.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, t.dims)
        if math.prod(t.dims) <= _FOLD_LIMIT and t.data_location != TensorProto.EXTERNAL:
            values[t.name] = t
    for node in m.graph.node:
        ins = [_tensor_info(types[n]) if n in types else None for n in node.input]
        found = {}
        try:
            if node.domain not in ("", "ai.onnx"):
                outs = _contrib_outputs(node.op_type, ins, _attributes(node))
                found = {n: helper.make_tensor_type_proto(_ENUM[t.dtype], t.shape)
                         for n, t in zip(node.output, outs) if n and t is not None}
            elif node.op_type in ("Shape", "Size") and ins[0] is not None:
                attrs = _attributes(node)
                shape = np.array(ins[0].shape, np.int64)[attrs.get("start", 0):attrs.get("end")]
                values[node.output[0]] = numpy_helper.from_array(
                    shape if node.op_type == "Shape" else np.array(_numel(ins[0]), np.int64), node.output[0])
            else:
                found = shape_inference.infer_node_outputs(
                    defs.get_schema(node.op_type, opsets.get("", 1), ""), node,
                    {n: types.get(n, TypeProto()) for n in node.input if n},
                    {n: values[n] for n in node.input if n in values}, opset_imports=list(m.opset_import))
                sized = [_tensor_info(found[n]) if n in found else None for n in node.output]
                if (all(n in values for n in node.input if n) and not node.op_type.startswith("Random")
                        and all(t is not None and _numel(t) <= _FOLD_LIMIT for t in sized)):
                    feeds = {n: numpy_helper.to_array(values[n]) for n in node.input if n}
                    for n, v in zip(node.output, ReferenceEvaluator(node, opsets=opsets).run(None, feeds)):
                        values[n] = numpy_helper.from_array(np.asarray(v), n)
        except Exception:  # an op ONNX cannot size: its outputs (and what only they feed) count 0 bytes
            pass
        types.update(found)
        types.update({n: helper.make_tensor_type_proto(values[n].data_type, values[n].dims)
                      for n in node.output if n in values})
    return types


def graph_costs(model: onnx.ModelProto | str | Path,
                input_shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str, NodeCost]]:
    """(node name, op type, cost) for every top-level node, with every tensor sized at the given input shapes.

    Paths load without external data: initializer dims are in the proto and sizing needs no weights. Local
    functions are inlined first. Unnamed nodes get "<op_type>_<index>", as ONNX Runtime names them.
    """
    import onnx
    import onnx.inliner

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    graph_inputs = {i.name: i for i in model.graph.input}
    unknown = sorted(set(input_shapes) - set(graph_inputs))
    if unknown:
        raise ValueError(f"input_shapes names {unknown}, not inputs of the graph ({sorted(graph_inputs)})")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i in m.graph.input:
        if i.name in input_shapes:
            i.type.CopyFrom(onnx.helper.make_tensor_type_proto(i.type.tensor_type.elem_type, input_shapes[i.name]))
    infos = {name: _tensor_info(t) for name, t in _infer(m).items()}
    constants = {t.name for t in m.graph.initializer} | {n.output[0] for n in m.graph.node if n.op_type == "Constant"}
    infos.update({n: replace(infos[n], constant=True) for n in constants if infos.get(n) is not None})
    costs = []
    for index, node in enumerate(m.graph.node):
        ins = [infos.get(n) if n else None for n in node.input]
        outs = [infos.get(n) if n else None for n in node.output]
        cost = node_cost(node.op_type, ins, outs, _attributes(node), node.domain)
        costs.append((node.name or f"{node.op_type}_{index}", node.op_type, cost))
    return costs
