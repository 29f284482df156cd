"""`kerastl bench`'s results as Markdown tables, for the console and docs."""

import os


def format_table(results):
    """The results as a Markdown table, with the ratios and notes.

    Example:
    ```python
    print(kerastl.bench.format_table(results))
    ```
    """
    speeds = results["images_per_second"]
    settings = results["settings"]
    lines = [
        f"backend {results['backend']}, {settings['model']} "
        f"({results['parameters']:,} parameters), "
        f"{settings['image_size']}px, batch {settings['batch_size']}, "
        f"{settings['dtype_policy']}, compile: {results['compile']}; "
        f"{results['machine']['processor']}, "
        f"{results['machine']['cpu_count']} cores, devices "
        f"{', '.join(results['machine']['devices'])}",
        "",
        "| images/s | train, full | train, frozen backbone | predict |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in ("kerastl", "keras_hub", "torch"):
        if f"{name}_train_full" not in speeds:
            continue
        cells = [
            f"{speeds[key]:.1f}" if key in speeds else "-"
            for key in (
                f"{name}_train_full",
                f"{name}_train_frozen",
                f"{name}_predict",
            )
        ]
        label = {"torch": "PyTorch (transformers)"}.get(name, name)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(f"| input pipeline | {speeds['pipeline']:.1f} | | |")
    for peer in ("keras_hub", "torch"):
        ratios = {
            kind: results["ratios"].get(f"{kind}_vs_{peer}")
            for kind in ("train_full", "train_frozen", "predict")
        }
        if any(value is not None for value in ratios.values()):
            cells = [
                "-" if value is None else f"{value:.3f}"
                for value in ratios.values()
            ]
            lines.append(f"| kerastl / {peer} | " + " | ".join(cells) + " |")
    cache = results["feature_cache"]
    if cache:
        lines += [
            "",
            f"Feature cache, {cache['epochs']} head epochs: in-graph "
            f"{cache['in_graph_seconds']} s, cached (cold) "
            f"{cache['cached_cold_seconds']} s: {cache['speedup']}x.",
        ]
    if results.get("photo_pipeline"):
        lines += ["", *_photo_lines(results["photo_pipeline"])]
    lines += ["", *results["notes"]]
    return "\n".join(lines).rstrip()


def _photo_lines(rows):
    cores = os.cpu_count() or 1
    whole, per_core = (
        rows["images_per_second"],
        rows["images_per_second_per_core"],
    )
    return [
        f"Photo pipeline: {rows['photos']} JPEGs of 12 MP to "
        f"{rows['photo_size']} px",
        "",
        "| images/s | full decode | reduced decode | prepared-image cache |",
        "| --- | ---: | ---: | ---: |",
        f"| all {cores} cores | {whole['full']:.1f} | {whole['reduced']:.1f} "
        f"| {whole['cached']:.1f} |",
        f"| per core | {per_core['full']:.1f} | {per_core['reduced']:.1f} "
        f"| {per_core['cached']:.1f} |",
        "",
        f"Cached: {rows['speedup_cached_vs_full']}x full decode. Preparing "
        f"the cache (once): {rows['prepare_images_per_second']} images/s; "
        f"{rows['cache_mb_per_1000_images']} MB per 1,000 images; model "
        f"input within {rows['cached_vs_reduced_mean_abs']}/255 of the "
        "uncached pipeline's on average.",
    ]
