"""Export trained models as a Triton model repository of single-file ONNX models."""
