"""Issue 7: 1,000 seeded mutated ONNX files through `deployinc verify` and `deployinc check`.

No uncaught exception (every exit code is 0, 1 or 2) and no crash of the CLI process (the harness runs in a
subprocess; a native crash would kill it before it prints DONE).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_harness.py")


@pytest.mark.slow
def test_fuzzed_onnx_files_never_crash_the_cli(tmp_path, tinynets_dir):
    from deployinc.export import export_pipeline

    base = tmp_path / "base.onnx"
    export_pipeline("tinynets:build", out=base, input_shape=(1, 3, 16, 16), exporter="torchscript")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(HARNESS), str(base), str(work), "1000", "20261124", "240"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**__import__("os").environ, "PYTHONPATH": str(tinynets_dir)},
    )
    out = proc.stdout
    assert proc.returncode == 0, f"harness died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert "UNCAUGHT" not in out, out
    done = int(out.split("DONE ")[1].split()[0])
    assert done >= 1000, f"only {done} mutations in the time budget"
    counts = {l.split()[1]: int(l.split()[2]) for l in out.splitlines() if l.startswith("COUNT")}
    # The fuzzer must reach both rejection paths and valid models: not everything is trivially refused.
    assert sum(v for k, v in counts.items() if k.endswith(":2")) > 100
    assert sum(v for k, v in counts.items() if k.endswith(":0") or k.endswith(":1")) > 10
