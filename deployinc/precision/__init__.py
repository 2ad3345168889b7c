"""Reduced precision: fp16 conversion with an overflow report (:mod:`.fp16`) and int8 static quantization with a
calibration report (:mod:`.int8`). Both write ONNX models that ONNX Runtime (CPU, CUDA) and TensorRT take."""
