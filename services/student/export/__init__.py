"""Exporting a trained student: merged ONNX graphs (fp32, int8) and a new qu_student version for Triton."""
