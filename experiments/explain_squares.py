"""Do kerastl's saliency maps point at what decides the class?

    python experiments/explain_squares.py --backend torch --output-dir out

Coloured squares on textured noise (`kerastl.data.synthetic.square_images`,
64x64 images, 16-pixel squares, three colours): the square alone decides
the class, and its position is random. For each seed the script trains,
from random weights,

- a tiny ResNet (16x16 last feature map), 5 epochs on 600 images, with
  the default optimizer (as `tests/test_explain.py` does),
- a tiny ViT (8x8 patches, 32 wide), with 2 and with 4 blocks, 10 epochs
  with Adam at 1e-3,

each on the true labels and, as a control, on shuffled labels, and
measures on 500 held-out images the accuracy and how often a map's maximum
lies inside the square: Grad-CAM for every model, attention rollout for the
ViTs. It also times Grad-CAM and rollout per image on full-size ResNet-50
and ViT-B/16 architectures (random weights, 224x224).

With `--docs-picture PATH`, it also saves the first seed's ResNet, writes 8
held-out squares as image files and runs `kerastl explain` on them, copying
the page it draws to PATH (the README's picture).

Writes `results.md` and `results.json` to `--output-dir`.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

SIZE, SQUARE = 64, 16
CLASSES = ["red", "green", "blue"]


def _models(seed):
    """`{name: (build, epochs)}` of the models compared."""
    import keras
    import keras_hub

    from kerastl import TransferClassifier
    from kerastl.models import standin_configs
    from kerastl.models import standins

    def resnet():
        backbone = standins.tiny_backbone(
            "resnet",
            SIZE,
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 32, 32],
            stackwise_num_blocks=[1, 1, 1],
            stackwise_num_strides=[1, 1, 1],
            block_type="basic_block",
        )
        converter = standins.imagenet_converter(SIZE)
        return TransferClassifier(backbone, 3, converter, class_names=CLASSES)

    def vit(blocks):
        def build():
            backbone = standins.tiny_backbone(
                "vit",
                SIZE,
                patch_size=8,
                num_layers=blocks,
                num_heads=2,
                hidden_dim=32,
                mlp_dim=64,
            )
            converter = standin_configs.Normalization(
                "minus_one_to_one"
            ).converter(keras_hub.layers.ViTImageConverter, SIZE)
            model = TransferClassifier(
                backbone, 3, converter, class_names=CLASSES
            )
            # From scratch: "auto" would give a transformer its gentle
            # fine-tuning rate (1e-5), under which it barely learns.
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
            return model

        return build

    return {
        "ResNet (tiny)": (resnet, 5),
        "ViT, 2 blocks": (vit(2), 10),
        "ViT, 4 blocks": (vit(4), 10),
    }


def _inside(heatmaps, corners):
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(axis=1)
    rows, columns = np.unravel_index(flat, heatmaps.shape[1:])
    return (
        (rows >= corners[:, 0])
        & (rows < corners[:, 0] + SQUARE)
        & (columns >= corners[:, 1])
        & (columns < corners[:, 1] + SQUARE)
    )


def localisation(seeds):
    import keras

    import kerastl
    from kerastl.data.synthetic import square_images

    test_images, test_labels, corners = square_images(
        500, image_size=SIZE, seed=1000
    )
    rows = []
    for seed in range(seeds):
        images, labels, _ = square_images(600, image_size=SIZE, seed=seed)
        for name, (build, epochs) in _models(seed).items():
            for control in (False, True):
                keras.utils.set_random_seed(seed)
                model = build()
                train_labels = labels
                if control:
                    rng = np.random.default_rng(seed)
                    train_labels = rng.permutation(labels)
                start = time.perf_counter()
                model.fit(
                    images,
                    train_labels,
                    epochs=epochs,
                    batch_size=32,
                    verbose=0,
                )
                seconds = time.perf_counter() - start
                probs = model.predict(test_images, verbose=0)
                row = {
                    "seed": seed,
                    "model": name,
                    "labels": "shuffled" if control else "true",
                    "accuracy": float((probs.argmax(1) == test_labels).mean()),
                    "fit_seconds": seconds,
                }
                methods = ["gradcam"] + (["rollout"] if "ViT" in name else [])
                for method in methods:
                    maps = kerastl.explain.explain(
                        model, test_images, method=method
                    )
                    row[method] = float(_inside(maps, corners).mean())
                print(json.dumps(row), flush=True)
                rows.append(row)
                if seed == 0 and name.startswith("ResNet") and not control:
                    first_resnet = model
    return rows, first_resnet


def timing():
    """Seconds per image of Grad-CAM and rollout, full-size models."""
    import keras_hub

    import kerastl
    from kerastl import TransferClassifier
    from kerastl.models import standins

    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        image_shape=(224, 224, 3),
    )
    vit = keras_hub.models.ViTBackbone(
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
    )
    converter = standins.imagenet_converter(224)
    images = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3))
    result = {}
    for name, backbone in (("ResNet-50", resnet), ("ViT-B/16", vit)):
        model = TransferClassifier(backbone, 10, converter)
        methods = ["gradcam"] + (["rollout"] if name.startswith("ViT") else [])
        for method in methods:
            # The first call compiles (JAX) or warms up: timed separately.
            start = time.perf_counter()
            kerastl.explain.explain(model, images[:8], method=method)
            first = time.perf_counter() - start
            start = time.perf_counter()
            kerastl.explain.explain(model, images, method=method)
            per_image = (time.perf_counter() - start) / len(images)
            result[f"{name} {method}"] = {
                "first_call_seconds": first,
                "seconds_per_image": per_image,
            }
            print(name, method, result[f"{name} {method}"], flush=True)
    return result


def docs_picture(model, output_dir, picture):
    from PIL import Image

    from kerastl.data.synthetic import square_images

    model.save(output_dir / "squares.keras")
    photos = output_dir / "photos"
    images, labels, _ = square_images(8, image_size=SIZE, seed=2000)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = photos / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"square {i}.png")
    maps = output_dir / "explain"
    shutil.rmtree(maps, ignore_errors=True)
    command = [
        "kerastl",
        "explain",
        str(output_dir / "squares.keras"),
        str(photos),
        "--output-dir",
        str(maps),
    ]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    shutil.copyfile(maps / "explanations_001.png", picture)


def _table(rows):
    header = "| model | labels | accuracy | Grad-CAM hits | rollout hits |"
    lines = [header, "| --- | --- | ---: | ---: | ---: |"]
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["labels"]), []).append(row)

    def cell(items, key):
        if key not in items[0]:
            return "-"
        values = np.array([item[key] for item in items])
        return f"{values.mean():.3f} ± {values.std():.3f}"

    for (model, labels), items in groups.items():
        lines.append(
            f"| {model} | {labels} | {cell(items, 'accuracy')} | "
            f"{cell(items, 'gradcam')} | {cell(items, 'rollout')} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--output-dir", type=pathlib.Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--docs-picture", type=pathlib.Path)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows, resnet = localisation(args.seeds)
    speed = {} if args.skip_timing else timing()
    if args.docs_picture:
        docs_picture(resnet, args.output_dir, args.docs_picture)
    results = {"backend": args.backend, "rows": rows, "timing": speed}
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))
    text = [
        f"# Saliency on coloured squares ({args.backend})",
        "",
        _table(rows),
    ]
    if speed:
        text += ["", "| model and method | first call (s) | s per image |"]
        text += ["| --- | ---: | ---: |"]
        text += [
            f"| {name} | {value['first_call_seconds']:.1f} | "
            f"{value['seconds_per_image']:.3f} |"
            for name, value in speed.items()
        ]
    (args.output_dir / "results.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
