"""Decoder-only language models: export with a KV cache, weight-only int8/int4, generation, TTFT and tokens/s.

One ONNX graph serves prompt processing and decoding: inputs `input_ids`, `attention_mask`, `position_ids` (not
in the fused graph, which derives positions from the mask) and `past_key_values.{i}.key/value` (past length
dynamic, 0 for the prompt), outputs `logits` and `present.{i}.key/value`. ONNX Runtime runs the model builder's
fused graph (fused_export.py; the TorchScript graph of export.py where the builder does not apply) with the cache
in buffers bound as past and present; OpenVINO converts from PyTorch and makes the model stateful, the cache
inside the compiled model (openvino_export.py). Fidelity is measured against the torch model itself: greedy
continuations, next-token distributions, perplexity.
"""
