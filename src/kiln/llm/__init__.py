"""Decoder-only language models: export with a KV cache, weight-only int8/int4, generation, TTFT and tokens/s.

One ONNX graph serves prompt processing and decoding: inputs `input_ids`, `attention_mask`, `position_ids` and
`past_key_values.{i}.key/value` (past length dynamic, 0 for the prompt), outputs `logits` and
`present.{i}.key/value`. ONNX Runtime runs it with the cache passed in and out; OpenVINO gets the same graph
made stateful (the cache lives inside the compiled model). Fidelity is measured against the torch model
itself: greedy continuations, next-token distributions, perplexity.
"""
