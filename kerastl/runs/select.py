"""`kerastl select`: rank pretrained backbones on your images before
fine-tuning any of them.

Each candidate preset turns the recipe's training and validation images
into pooled features once (through the feature cache), and three scores
say how well those frozen features fit the labels:

- LogME, the exact log evidence of a Bayesian linear model (You et al.,
  ICML 2021), training-free;
- kNN accuracy on validation (k = 20, cosine, DINO's weighted votes);
- a linear probe's validation accuracy (logistic regression; its C chosen
  on validation), or mean average precision for multi-label data.

No scorer wins everywhere in published comparisons, so candidates are
ranked by their mean rank over the three, the probe breaking ties. The
cost of each candidate (parameters, images/s of inference on this
machine, the feature pass) is measured next to it.
"""

import dataclasses
import json
import time

import keras
import numpy as np
from scipy import stats

from kerastl.errors import OfflineError
from kerastl.errors import PresetError
from kerastl.evaluate import plots
from kerastl.evaluate import report
from kerastl.evaluate import transferability
from kerastl.models import backbones
from kerastl.models import catalog
from kerastl.runs import inspection
from kerastl.runs import recipe_text
from kerastl.runs import rundir
from kerastl.runs.recipe import Recipe
from kerastl.train.stage import Stage
from kerastl.utils import atomic
from kerastl.utils import text

# Spanning families and sizes: a convnet of each generation, a supervised
# and a self-supervised ViT, and a mobile network.
DEFAULT_PRESETS = (
    "resnet_50_imagenet",
    "vit_base_patch16_224_imagenet",
    "efficientnet_b0_ra_imagenet",
    "mobilenet_v3_large_100_imagenet",
    "dinov2_small",
)
REPORT_FILE = rundir.REPORT_FILE
RESULT_FILE = "select.json"
PLOT_FILE = "score_vs_speed.png"
# Inference is timed over at least this many batches and seconds.
_TIMED_BATCHES = 3
_TIMED_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A backbone to score: a preset, with or without its weights.

    Args:
        preset: str. A keras-hub preset name, handle or local directory.
        pretrained: bool. `False` scores the architecture at random
            initialization (a baseline). Defaults to `True`.

    Example:
    ```python
    kerastl.runs.select.Candidate("resnet_50_imagenet", pretrained=False)
    ```
    """

    preset: str
    pretrained: bool = True

    @property
    def label(self):
        """The preset, marked when its weights are random."""
        return self.preset if self.pretrained else f"{self.preset} (random)"


@dataclasses.dataclass
class Score:
    """One candidate's scores and costs.

    Attributes:
        candidate: str. `Candidate.label`.
        preset: str. The preset that made the features (a stand-in's
            directory in smoke mode).
        family: str. The backbone family.
        fine_tune_learning_rate: float. The family's usual rate for
            training all layers.
        parameters: int. Backbone parameters.
        feature_dim: int. Width of the pooled features.
        logme: float. LogME per example (higher is better).
        knn: float. kNN accuracy (mAP for multi-label) on validation.
        probe: float. Linear-probe accuracy (mAP) on validation.
        probe_c: float. The probe's inverse regularization, chosen on
            validation.
        images_per_second: float. Inference throughput on this machine.
        feature_seconds: float. The feature passes' wall time (cache
            hits take almost none).
        rank: int. 1 is the best.

    Example:
    ```python
    best = kerastl.runs.select.select("recipes/pets.py").scores[0]
    best.candidate, best.probe
    ```
    """

    candidate: str
    preset: str
    family: str
    fine_tune_learning_rate: float
    parameters: int
    feature_dim: int
    logme: float
    knn: float
    probe: float
    probe_c: float
    images_per_second: float
    feature_seconds: float
    rank: int = 0


@dataclasses.dataclass
class Selection:
    """What `select` found.

    Attributes:
        scores: list of `Score`, best first.
        metric: str. `"accuracy"`, or `"mAP"` for multi-label data.
        output_dir: `pathlib.Path` of the report, JSON and plot.
        skipped: dict. Candidate to the reason it could not be scored (a
            preset that failed to load or download).
        recipe_path: `pathlib.Path` of the written recipe, or `None`.

    Example:
    ```python
    selection = kerastl.runs.select.select("recipes/pets.py")
    selection.scores[0].candidate
    ```
    """

    scores: list
    metric: str
    output_dir: object
    skipped: dict
    recipe_path: object = None


def select(
    source,
    candidates=None,
    *,
    output_dir=None,
    smoke=False,
    write_recipe=None,
    multi_label=False,
    verbose="auto",
    print_fn=print,
):
    """Scores candidate backbones on a dataset and ranks them.

    Writes `report.md` (the ranked table and a score-vs-speed plot),
    `select.json` and `score_vs_speed.png` into a new folder, prints the
    table, and with `write_recipe` a recipe for the winner.

    Args:
        source: a `kerastl.Recipe`, a recipe file, or a folder or CSV of
            labelled images (see `kerastl.data.DataSpec`).
        candidates: list of preset names or `Candidate`s, or `None` for
            the recipe's own preset (if any) and `DEFAULT_PRESETS`.
        output_dir: path or `None`. A new or empty folder; `None` makes
            `runs/<name>/select/<timestamp>`.
        smoke: bool. The recipe's smoke data, and tiny random-weight
            stand-ins for presets that cannot load offline.
        write_recipe: path or `None`. Where to write a recipe (a `.py`
            file that must not exist) for the best candidate.
        multi_label: bool. For a folder or CSV with several labels per
            image.
        verbose: `"auto"`, 0 or 1: progress bars of the feature passes.
        print_fn: callable for console lines.

    Returns:
        A `Selection`.

    Example:
    ```python
    selection = kerastl.select(
        "data/flowers", ["resnet_50_imagenet", "vit_base_patch16_224_imagenet"]
    )
    print(selection.scores[0].candidate)
    ```
    """
    recipe, candidates = _recipe_and_candidates(source, candidates, multi_label)
    if write_recipe is not None:
        recipe_text.check_new_recipe_file(write_recipe)
        # Found now, not after every candidate has been scored.
        recipe_text.check_text_form(recipe)
    if not smoke:
        # A mistyped name fails here, before any other candidate's work.
        for candidate in candidates:
            catalog.check_preset(candidate.preset)
    with inspection.claim_output(recipe, output_dir, "select") as lock:
        scores, skipped = [], {}
        for number, candidate in enumerate(candidates, start=1):
            print_fn(f"Candidate {number}/{len(candidates)}: {candidate.label}")
            try:
                scores.append(
                    _score(recipe, candidate, smoke, verbose, print_fn)
                )
            except (PresetError, OfflineError) as error:
                # One preset that cannot load (offline, a failed download)
                # does not cost the others' results.
                skipped[candidate.label] = str(error)
                print_fn(f"Skipped {candidate.label}: {error}")
        if not scores:
            raise PresetError(
                "No candidate could be scored: "
                + " ".join(f"{k}: {v}" for k, v in skipped.items())
            )
        metric = "mAP" if recipe.multi_label else "accuracy"
        scores = rank(scores)
        selection = Selection(scores, metric, lock.run_dir, skipped)
        _write_results(selection, recipe, candidates)
    print_fn(format_table(selection))
    print_fn(f"Report: {selection.output_dir / REPORT_FILE}")
    if write_recipe is not None:
        best = candidates[
            [c.label for c in candidates].index(scores[0].candidate)
        ]
        selection.recipe_path = recipe_text.write_recipe(
            winner_recipe(recipe, best, scores[0].fine_tune_learning_rate),
            write_recipe,
            f"Fine-tunes {best.label}, which `kerastl select` ranked first "
            f"on {recipe.name}'s data.",
        )
        print_fn(
            f"Recipe for {best.label}: {selection.recipe_path} (train it "
            f"with `kerastl fit {selection.recipe_path}`)"
        )
    return selection


def _recipe_and_candidates(source, candidates, multi_label):
    candidates = [
        c if isinstance(c, Candidate) else Candidate(str(c))
        for c in (candidates or ())
    ]
    if isinstance(source, Recipe) or str(source).endswith(".py"):
        recipe = inspection.recipe_for(source)
    else:
        # Bare data names no preset; the recipe's preset is only a default
        # candidate, so any one serves.
        first = candidates[0].preset if candidates else DEFAULT_PRESETS[0]
        recipe = inspection.recipe_for(source, first, multi_label)
    if not candidates:
        names = [recipe.preset, *DEFAULT_PRESETS]
        candidates = [Candidate(n) for n in dict.fromkeys(names)]
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise ValueError(
            f"The candidates must differ; {labels} repeats one. Give each "
            "preset once."
        )
    return recipe, candidates


def _score(recipe, candidate, smoke, verbose, print_fn):
    """Features, scores and costs of one candidate."""
    seen = inspection.inspect(
        dataclasses.replace(
            recipe, preset=candidate.preset, pretrained=candidate.pretrained
        ),
        splits=("train", "validation"),
        smoke=smoke,
        verbose=verbose,
        print_fn=print_fn,
    )
    train, validation = seen.features["train"], seen.features["validation"]
    family = backbones.family_of(seen.model.backbone)
    multi_label = seen.recipe.multi_label
    num_classes = len(seen.bundle.class_names)
    knn = transferability.knn_scores(
        train.features,
        train.labels,
        validation.features,
        num_classes=num_classes,
    )
    probe = transferability.linear_probe(
        train.features,
        train.labels,
        validation.features,
        validation.labels,
        multi_label=multi_label,
        seed=recipe.seed,
    )
    return Score(
        candidate=candidate.label,
        preset=seen.recipe.preset,
        family=family.name,
        fine_tune_learning_rate=family.fine_tune_learning_rate,
        parameters=int(seen.model.backbone.count_params()),
        feature_dim=int(train.features.shape[-1]),
        logme=float(transferability.logme(train.features, train.labels)),
        knn=float(
            transferability.classification_score(
                knn, validation.labels, multi_label
            )
        ),
        probe=float(probe.score),
        probe_c=float(probe.C),
        images_per_second=_images_per_second(
            seen.model, recipe.batch_size, smoke
        ),
        feature_seconds=float(sum(seen.seconds.values())),
    )


def _images_per_second(model, batch_size, smoke):
    """Inference throughput of the feature extractor on this machine.

    A smoke run times one batch: its number only shows the column works.
    """
    extractor = model.feature_extractor()
    images = np.zeros((batch_size, *model.image_size, 3), np.float32)
    keras.ops.convert_to_numpy(extractor.predict_on_batch(images))
    least, seconds = (1, 0.0) if smoke else (_TIMED_BATCHES, _TIMED_SECONDS)
    batches, start = 0, time.perf_counter()
    while batches < least or time.perf_counter() - start < seconds:
        keras.ops.convert_to_numpy(extractor.predict_on_batch(images))
        batches += 1
    return batches * batch_size / (time.perf_counter() - start)


def rank(scores):
    """Sorts scores by mean rank over LogME, kNN and probe; sets `rank`.

    Ties in the mean rank go to the better probe score.

    Args:
        scores: list of `Score`.

    Returns:
        The list, best first.

    Example:
    ```python
    kerastl.runs.select.rank(scores)[0].rank  # 1
    ```
    """
    columns = np.array([[s.logme, s.knn, s.probe] for s in scores])
    # Rank 1 for the highest value in each column; equal values share
    # their mean rank.
    ranks = stats.rankdata(-columns, axis=0)
    order = sorted(
        range(len(scores)), key=lambda i: (ranks[i].mean(), -columns[i, 2])
    )
    ranked = [scores[i] for i in order]
    for place, score in enumerate(ranked, start=1):
        score.rank = place
    return ranked


def format_table(selection):
    """The ranked table as console text.

    Example:
    ```python
    print(kerastl.runs.select.format_table(selection))
    ```
    """
    return text.columns(_table_rows(selection))


def _table_rows(selection):
    metric = selection.metric
    rows = [
        (
            "rank",
            "candidate",
            "family",
            "params",
            "dim",
            "LogME",
            f"kNN {metric}",
            f"probe {metric}",
            "img/s",
            "features s",
        )
    ]
    for s in selection.scores:
        rows.append(
            (
                str(s.rank),
                s.candidate,
                s.family,
                f"{s.parameters / 1e6:.2f}M",
                str(s.feature_dim),
                f"{s.logme:.4f}",
                f"{s.knn:.4f}",
                f"{s.probe:.4f}",
                f"{s.images_per_second:.1f}",
                f"{s.feature_seconds:.1f}",
            )
        )
    return rows


def winner_recipe(recipe, candidate, learning_rate):
    """A recipe that fine-tunes `candidate` on `recipe`'s data.

    The data, batch size and augmentation stay the recipe's; the stages
    are a head stage (3 epochs at 1e-3, on cached features when the
    augmentation allows) and then all layers for 3 epochs at
    `learning_rate`, the family's usual fine-tuning rate
    (`BackboneFamily.fine_tune_learning_rate`: 1e-4 for convnets, 1e-5
    for transformers).

    Args:
        recipe: the `kerastl.Recipe` scored on.
        candidate: the winning `Candidate`.
        learning_rate: float. For the all-layers stage.

    Example:
    ```python
    kerastl.runs.select.winner_recipe(recipe, Candidate("dinov2_small"),
                                      1e-5)
    ```
    """
    return dataclasses.replace(
        recipe,
        preset=candidate.preset,
        pretrained=candidate.pretrained,
        stages=(
            Stage(name="head", epochs=3, train="head", learning_rate=1e-3),
            Stage(
                name="all", epochs=3, train="all", learning_rate=learning_rate
            ),
        ),
    )


def _write_results(selection, recipe, candidates):
    folder = selection.output_dir
    rows = _table_rows(selection)
    plots.score_vs_speed(
        [s.candidate for s in selection.scores],
        [s.images_per_second for s in selection.scores],
        [s.probe for s in selection.scores],
        f"probe {selection.metric}",
        folder / PLOT_FILE,
    )
    summary = {
        "recipe": recipe.name,
        "data": recipe.to_dict()["data"],
        "backend": keras.config.backend(),
        "metric": selection.metric,
        "candidates": [dataclasses.asdict(c) for c in candidates],
        "scores": [dataclasses.asdict(s) for s in selection.scores],
        "skipped": selection.skipped,
    }
    atomic.write_text(folder / RESULT_FILE, json.dumps(summary, indent=2))
    lines = [
        f"# Backbone selection for {recipe.name}",
        "",
        f"- backend: {keras.config.backend()}",
        f"- ranked by the mean rank of LogME, kNN and probe {selection.metric}"
        " (higher is better for each)",
        "",
        report.markdown_table(rows[0], rows[1:]),
        "",
        *(
            f"- skipped {name}: {why}"
            for name, why in selection.skipped.items()
        ),
        "",
        f"![Probe {selection.metric} against inference speed]({PLOT_FILE})",
    ]
    atomic.write_text(folder / REPORT_FILE, "\n".join(lines) + "\n")
