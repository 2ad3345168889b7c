"""TensorRT: the engine cache, optimisation profiles, ONNX Runtime provider options, the native engine builder and
the static compatibility check.

Nothing here imports TensorRT at module level. The parts that need no library (cache keys and manifests, profiles,
provider options, the operator-support check) run and are tested everywhere; :mod:`deployinc.trt.engine` imports
``tensorrt`` through :func:`deployinc.lazy.require` only when an engine is built or loaded.
"""
