"""Files in and out: the only package that writes files, loads checkpoints, or reads ONNX files from disk.

- :mod:`.atomic`: atomic writes (link-or-fail without ``--force``, several files as one unit with rollback),
  working folders, and the sweep of a killed run's leftovers;
- :mod:`.checkpoints`: weights-only checkpoint loading and saving, hashes;
- :mod:`.onnx_files`: checked ONNX reading, and writing with external data.
"""

from __future__ import annotations

from .atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_many,
    atomic_write_text,
    check_output_path,
    clean_stale_temporaries,
    exists,
    scratch_dir,
    scratch_root,
    work_dir,
)
from .checkpoints import load_checkpoint, save_checkpoint, sha256_bytes, sha256_file
from .onnx_files import OnnxFile, copy_onnx, load_onnx, parse_onnx_bytes, save_onnx

__all__ = [
    "OnnxFile",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_many",
    "atomic_write_text",
    "check_output_path",
    "clean_stale_temporaries",
    "exists",
    "load_checkpoint",
    "copy_onnx",
    "load_onnx",
    "parse_onnx_bytes",
    "save_checkpoint",
    "save_onnx",
    "scratch_dir",
    "scratch_root",
    "sha256_bytes",
    "sha256_file",
    "work_dir",
]
