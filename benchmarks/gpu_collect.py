"""Gathers the outputs of `benchmarks/gpu.sh` into one JSON file.

    python benchmarks/gpu_collect.py OUTPUT_DIR

Reads OUTPUT_DIR/steps.txt (one `name status seconds` line per step), each
step's `<name>.log`, the `bench-*.json` results and `nvidia-smi.txt`, and
writes OUTPUT_DIR/gpu-bench.json: `steps` (status, seconds, the log's last
lines), `bench` (results by step name), `nvidia_smi`.
"""

import json
import pathlib
import sys

_LOG_TAIL_LINES = 40


def collect(folder):
    """The one JSON document of a `gpu.sh` output folder.

    Args:
        folder: path of the folder `gpu.sh` wrote.

    Example:
    ```python
    document = collect("gpu-bench")
    document["bench"]["bench-jax-resnet50-float32"]["images_per_second"]
    ```
    """
    folder = pathlib.Path(folder)
    steps = {}
    for line in (folder / "steps.txt").read_text().splitlines():
        name, status, seconds = line.split()
        log = folder / f"{name}.log"
        tail = (
            log.read_text(errors="replace").splitlines() if log.exists() else []
        )
        steps[name] = {
            "status": int(status),
            "seconds": int(seconds),
            "log_tail": tail[-_LOG_TAIL_LINES:],
        }
    bench = {
        path.stem: json.loads(path.read_text())
        for path in sorted(folder.glob("bench-*.json"))
    }
    smi = folder / "nvidia-smi.txt"
    return {
        "steps": steps,
        "bench": bench,
        "nvidia_smi": smi.read_text() if smi.exists() else None,
    }


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    target = out / "gpu-bench.json"
    target.write_text(json.dumps(collect(out), indent=2))
    failed = [n for n, s in collect(out)["steps"].items() if s["status"]]
    print(
        f"Results: {target}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
