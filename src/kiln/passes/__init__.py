"""Graph passes on ONNX models: each one reads a model file and writes a transformed one."""
