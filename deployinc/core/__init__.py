"""The bottom layer: what every stage uses and that uses no stage. Modules here import only each other, the
standard library, numpy and (lazily, inside functions that need them) onnx and torch."""
