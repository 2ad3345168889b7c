"""``deployinc deploy``: from a model to the fastest artifact that still computes the same.

Candidates (precision x backend x session options) are made, verified against eager PyTorch and benchmarked in one
run; the fastest that passes is packaged with the evidence and a Triton model repository.
"""
