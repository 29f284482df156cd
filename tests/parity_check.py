"""Cross-backend parity: the same inputs give the same answers everywhere.

`nox -s parity` runs it in three steps, because Keras fixes its backend per
process:

    python tests/parity_check.py prepare WORK    # once, any backend
    KERAS_BACKEND=B python tests/parity_check.py check WORK   # per backend
    python tests/parity_check.py table WORK      # compare, print, exit 1
                                                 # if a check fails

`prepare` writes what every backend then loads: a tiny ResNet and a tiny
ViT kerastl preset (backbone and head weights), random-weight Hugging Face
ViT, DeiT and DINOv2 checkpoints with transformers' own outputs as the
reference, and test images. `check` computes, on its backend: the logits of
both presets and their saliency maps (Grad-CAM of both, attention rollout
of the ViT); each checkpoint's token outputs, against transformers; and a
smoke run of `recipes/cifar10_resnet.py` on the tiny ResNet, seed 0.
`table` prints a check x backend table.
"""

import json
import pathlib
import shutil
import sys

LOGITS_ATOL = 1e-4
HF_ATOL = 1e-4
# Maps are scaled to [0, 1] per image, so this is relative to each map's
# own range.
HEATMAP_ATOL = 1e-4
# (preset, method): the saliency maps compared.
HEATMAPS = (("resnet", "gradcam"), ("vit", "gradcam"), ("vit", "rollout"))
# A smoke run is two SGD steps per stage from the same start: the backends
# differ only by float32 rounding, which these bounds leave room for.
SMOKE_LOSS_RTOL = 1e-3
SMOKE_ACCURACY_ATOL = 1e-6
FAMILIES = ("vit", "deit", "dinov2")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def prepare(work):
    import kit
    import numpy as np
    import torch

    from kerastl import TransferClassifier

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    images = kit.random_images(4)
    np.save(work / "images.npy", images)
    for family in ("resnet", "vit"):
        kit.save_tiny_preset(family, work / f"{family}_backbone")
        model = TransferClassifier.from_preset(
            work / f"{family}_backbone", num_classes=5
        )
        model.save_to_preset(work / family)
    for family in FAMILIES:
        hf_model, processor = kit.write_hf_checkpoint(
            family, work / f"hf_{family}"
        )
        pixels = processor(images=list(images), return_tensors="pt")
        with torch.no_grad():
            hidden = hf_model(**pixels).last_hidden_state.numpy()
        np.save(work / f"hf_{family}_pixels.npy", pixels["pixel_values"])
        np.save(work / f"hf_{family}_reference.npy", hidden)


def check(work):
    import keras
    import numpy as np

    import kerastl
    from kerastl import TransferClassifier
    from kerastl.models import backbones
    from kerastl.runs import fit
    from kerastl.runs.overrides import apply_overrides
    from kerastl.runs.recipe import load_recipe

    backend = keras.config.backend()
    out = work / backend
    out.mkdir(exist_ok=True)
    images = np.load(work / "images.npy")
    for family in ("resnet", "vit"):
        model = TransferClassifier.from_preset(work / family)
        logits = model.logits_model().predict(images, verbose=0)
        np.save(out / f"{family}_logits.npy", logits)
        for preset, method in HEATMAPS:
            if preset == family:
                maps = kerastl.explain.explain(model, images, method=method)
                np.save(out / f"{family}_{method}.npy", maps)
    hf = {}
    for family in FAMILIES:
        model = TransferClassifier.from_preset(
            work / f"hf_{family}", num_classes=3
        )
        pixels = np.load(work / f"hf_{family}_pixels.npy")
        reference = np.load(work / f"hf_{family}_reference.npy")
        pixels = np.transpose(pixels, (0, 2, 3, 1))
        key, _ = backbones.image_input(model.backbone)
        sequence = model.backbone.predict(
            {key: pixels} if key else pixels, verbose=0
        )
        hf[family] = float(np.abs(sequence - reference).max())
    recipe = apply_overrides(
        load_recipe(ROOT / "recipes" / "cifar10_resnet.py"),
        [f"preset={work / 'resnet_backbone'}", "seed=0"],
    )
    run_dir = fit.fit_recipe(
        recipe, output_dir=out / "smoke", smoke=True, print_fn=lambda _: None
    )
    smoke = json.loads((run_dir / "metrics.json").read_text())
    validation = smoke["splits"]["validation"]
    history = (run_dir / "history.csv").read_text().splitlines()
    result = {
        "hf_max_abs_diff": hf,
        "smoke_accuracy": validation["accuracy"],
        "smoke_nll": validation["nll"],
        "smoke_history": history,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))


def table(work):
    import numpy as np

    backends = [
        b
        for b in ("jax", "tensorflow", "torch")
        if (work / b / "result.json").exists()
    ]
    if len(backends) < 2:
        sys.exit(f"parity needs results of two backends or more in {work}")
    results = {
        b: json.loads((work / b / "result.json").read_text()) for b in backends
    }
    reference = backends[0]
    rows = []  # (check, {backend: (text, ok)})

    for family in ("resnet", "vit"):
        base = np.load(work / reference / f"{family}_logits.npy")
        cells = {}
        for b in backends:
            diff = np.abs(np.load(work / b / f"{family}_logits.npy") - base)
            cells[b] = (f"{diff.max():.1e}", diff.max() <= LOGITS_ATOL)
        rows.append(
            (f"{family} logits vs {reference} (atol {LOGITS_ATOL:g})", cells)
        )
    for family, method in HEATMAPS:
        base = np.load(work / reference / f"{family}_{method}.npy")
        cells = {}
        for b in backends:
            maps = np.load(work / b / f"{family}_{method}.npy")
            diff = np.abs(maps - base).max()
            cells[b] = (f"{diff:.1e}", diff <= HEATMAP_ATOL)
        rows.append(
            (
                f"{family} {method} vs {reference} (atol {HEATMAP_ATOL:g})",
                cells,
            )
        )
    for family in FAMILIES:
        cells = {}
        for b in backends:
            diff = results[b]["hf_max_abs_diff"][family]
            cells[b] = (f"{diff:.1e}", diff <= HF_ATOL)
        rows.append((f"HF {family} vs transformers (atol {HF_ATOL:g})", cells))
    base = results[reference]
    for key, label, close in (
        (
            "smoke_nll",
            f"smoke val NLL (rtol {SMOKE_LOSS_RTOL:g})",
            lambda a, b: abs(a - b) <= SMOKE_LOSS_RTOL * abs(b),
        ),
        (
            "smoke_accuracy",
            "smoke val accuracy (equal)",
            lambda a, b: abs(a - b) <= SMOKE_ACCURACY_ATOL,
        ),
    ):
        cells = {
            b: (f"{results[b][key]:.5f}", close(results[b][key], base[key]))
            for b in backends
        }
        rows.append((label, cells))

    width = max(len(label) for label, _ in rows)
    lines = [
        "check".ljust(width) + "".join(f"  {b:>14}" for b in backends),
    ]
    for label, cells in rows:
        lines.append(
            label.ljust(width)
            + "".join(
                f"  {cells[b][0] + (' ok' if cells[b][1] else ' FAIL'):>14}"
                for b in backends
            )
        )
    print("\n".join(lines))
    failed = [
        label for label, cells in rows if not all(c[1] for c in cells.values())
    ]
    if failed:
        sys.exit("parity failed: " + "; ".join(failed))


if __name__ == "__main__":
    step, work = sys.argv[1], pathlib.Path(sys.argv[2])
    {"prepare": prepare, "check": check, "table": table}[step](work)
