"""Times JAX on CPU under XLA flag settings, with TensorFlow for reference.

    python benchmarks/jax_cpu_flags.py [--steps 5] [--output table.md]

Each row runs `kerastl bench` in a fresh process (XLA reads its flags once,
when JAX starts) with `XLA_FLAGS` set explicitly, so kerastl's own CPU
flags (`kerastl.utils.jax_cpu`) do not apply and each row is exactly the
settings it names. ResNet-18 and ViT-Ti/16 (random weights) at 64 px,
batch 32, kerastl only; images/s of training the whole network and of
predicting. The machine's load is printed with each row, since timings
under contention are far off.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

# The settings measured: a name and the flags. "defaults" spells out a
# default value, so that XLA_FLAGS is set and kerastl adds nothing.
SETTINGS = {
    "defaults": "--xla_cpu_use_thunk_runtime=true",
    "thunk runtime off": "--xla_cpu_use_thunk_runtime=false",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "thunk runtime off + oneDNN": (
        "--xla_cpu_use_thunk_runtime=false --xla_cpu_use_onednn=true"
    ),
    "fusion emitters off": "--xla_cpu_use_fusion_emitters=false",
}
MODELS = ("resnet18", "vit_tiny")


def bench(backend, model, steps, flags=None):
    """`kerastl bench` JSON for one backend, model and XLA_FLAGS."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("XLA_FLAGS", None)
    if flags is not None:
        env["XLA_FLAGS"] = flags
    with tempfile.TemporaryDirectory() as scratch:
        output = os.path.join(scratch, "bench.json")
        subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "kerastl"),
                "bench",
                "--model",
                model,
                "--image-size",
                "64",
                "--batch-size",
                "32",
                "--steps",
                str(steps),
                "--warmup",
                "2",
                "--repeats",
                "2",
                "--cache-epochs",
                "0",
                "--photos",
                "0",
                "--no-peers",
                "--output",
                output,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        with open(output) as f:
            return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--output")
    args = parser.parse_args()
    rows = [("TensorFlow (reference)", "tensorflow", None)] + [
        (name, "jax", flags) for name, flags in SETTINGS.items()
    ]
    header = (
        "| settings | XLA_FLAGS | "
        + " | ".join(f"{model} train | {model} predict" for model in MODELS)
        + " | others' CPU share |"
    )
    lines = [header, "|" + " --- |" * (3 + 2 * len(MODELS))]
    for name, backend, flags in rows:
        cells, busy = [], []
        for model in MODELS:
            result = bench(backend, model, args.steps, flags)
            speeds = result["images_per_second"]
            cells += [
                f"{speeds['kerastl_train_full']:.1f}",
                f"{speeds['kerastl_predict']:.1f}",
            ]
            busy.append(result["load"]["others_cpu_share"])
        shown = f"`{flags}`" if flags else "-"
        lines.append(
            f"| {name} | {shown} | "
            + " | ".join(cells)
            + f" | {max(busy):.0%} |"
        )
        print(lines[-1], flush=True)
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
