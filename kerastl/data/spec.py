"""What to load (`DataSpec`, `Augment`) and what comes back (`DataBundle`)."""

import dataclasses


class DataError(ValueError):
    """The data cannot be used as described; raised before any training.

    The message says what is wrong and what to do about it.

    Example:
    ```python
    try:
        bundle = kerastl.data.load_data(spec, image_size=(224, 224),
                                        batch_size=32, multi_label=False)
    except kerastl.data.DataError as e:
        print(e)
    ```
    """


SOURCES = ("tfds", "folder", "csv", "arrays", "idx")

# Width x height above which an image is refused before decoding. Decoding
# costs 3 to 11 bytes a pixel (RGB; RGBA converted to RGB; 16-bit gray
# rescaled in float64), so 50 megapixels bounds one decode to about 0.5 GB
# per tf.data worker. It is above the sizes of today's phones (12 to 48
# MP), mirrorless cameras (24 to 45 MP) and 8K video frames (33 MP), and
# under PIL's own decompression-bomb warning (89 MP). JPEGs, most big
# photos, are decoded reduced, far below it.
MAX_PIXELS = 50_000_000


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the images and labels come from.

    Args:
        source: str. `"tfds"` (a TensorFlow Datasets name), `"folder"` (one
            subfolder per class), `"csv"` (a table of image paths and
            labels), `"arrays"` (NumPy arrays in memory) or `"idx"` (a
            directory of MNIST-style IDX files, e.g. Fashion-MNIST; see
            `kerastl.data.idx_source`).
        name: str or `None`. The tfds dataset name (`"oxford_iiit_pet"`,
            `"cifar10"`, `"voc/2007"`), the folder path, the CSV path or
            the IDX directory.
        train: str. The training split: a tfds split string (slices such as
            `"train[:90%]"` allowed); for a folder, the subfolder holding
            the training classes when the folder has split subfolders
            (`train/`, `validation/`, `test/`), else the folder itself is
            all training data; for a CSV with a `split` column, the value
            that marks training rows; for IDX files, the file prefix
            (`train` reads `train-images-idx3-ubyte.gz` and
            `train-labels-idx1-ubyte.gz`). Defaults to `"train"`.
        validation: str or `None`. The validation split, as `train`, or a
            second CSV file for CSV sources. `None` carves
            `validation_fraction` of the training data (seeded, stratified
            by class for single-label data); a folder with a
            `validation/` (or `val/`) subfolder, or a CSV whose `split`
            column has `validation` (or `val`) rows, uses those instead.
            Defaults to `None`.
        test: str or `None`. The test split, as `validation`; a `test/`
            subfolder, `test` rows or `t10k` IDX files are used when
            `None`. Defaults to `None`.
        validation_fraction: float. The share of the training data carved
            off for validation. Defaults to `0.1`.
        image_key: str. The tfds feature holding the image. Defaults to
            `"image"`.
        label_key: str. The tfds feature holding the label. A path into a
            sequence feature such as `"objects/label"` gives multi-hot
            labels (PASCAL VOC). Defaults to `"label"`.
        path_column: str. CSV column of image paths, relative to the CSV's
            folder or absolute. Defaults to `"path"`.
        label_column: str or `None`. CSV column of label names, separated
            by `label_delimiter`. Defaults to `"labels"`.
        label_delimiter: str. Separator of `label_column`. Defaults to
            `" "`.
        label_columns: tuple of str or `None`. One 0/1 CSV column per
            class; when set, `label_column` is ignored. Defaults to `None`.
        class_names: tuple of str or `None`. The classes, in label order.
            A label outside this list is an error. Defaults to `None`
            (sorted names found in the data; the tfds label's names).
        data_dir: str or `None`. The tfds data directory. Defaults to
            `None` (tfds' own default).
        arrays: dict or `None`. For `source="arrays"`: `{"train": (images,
            labels), "validation": ..., "test": ...}`. Images are `uint8`
            `(N, H, W, 3)`, or grayscale `(N, H, W)` / `(N, H, W, 1)`;
            labels are integer `(N,)` or multi-hot `(N, C)`. Defaults to
            `None`.
        classes: tuple of int or `None`. Keep only these classes (indices
            into the source's class list), in every split, relabelled
            `0 .. len(classes) - 1` in the order given; their names are
            kept. Single-label local sources (folder, CSV, arrays, IDX)
            only. Defaults to `None` (all classes).
        train_per_class: int or `None`. Train on a sample of this many
            examples per class, drawn under the seed from the training
            data left after validation is carved, so the two never
            overlap (few-shot training with a full-size validation and
            test). Single-label local sources only; a `--smoke` run keeps
            at most its few examples. Defaults to `None` (all).
        max_pixels: int. Image files with more pixels than this (width x
            height, read from the file's header before anything is
            decoded) are skipped and listed, not decoded: this bounds the
            memory one image can take (a PNG of a few hundred KB can
            declare gigabytes of pixels). Raise it for larger images;
            above PIL's own limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89
            million) that limit is raised to it, for the whole process.
            Folder and CSV sources. Defaults to `50_000_000` (50
            megapixels, at most about 0.5 GB to decode).
        cache_images: bool. Decode each image file once, before training,
            and keep it shrunk to twice the model's size in the
            prepared-image cache under `$KERASTL_CACHE_DIR/images` (see
            `kerastl.data.prepared`), so epochs and later runs read small
            JPEGs instead of decoding the originals again: 15 times faster
            than the reduced decode on 12 MP photos, 47 times a full
            decode, for about 200 KB of disk per image at 224 px. `False`
            decodes every file on every epoch. Folder and CSV sources.
            Defaults to `True`.

    Example:
    ```python
    pets = DataSpec("tfds", "oxford_iiit_pet", test="test")
    voc = DataSpec(
        "tfds", "voc/2007", validation="validation", label_key="objects/label"
    )
    flowers = DataSpec("folder", "/data/flowers")
    tags = DataSpec("csv", "/data/tags.csv", label_column="tags")
    # Fashion-MNIST's classes 5-9, 20 training images of each.
    shoes_and_bags = DataSpec(
        "idx",
        "/usr/share/datasets/fashion-mnist",
        class_names=kerastl.data.idx_source.FASHION_MNIST_CLASSES,
        classes=(5, 6, 7, 8, 9),
        train_per_class=20,
    )
    ```
    """

    source: str
    name: str | None = None
    train: str = "train"
    validation: str | None = None
    test: str | None = None
    validation_fraction: float = 0.1
    image_key: str = "image"
    label_key: str = "label"
    path_column: str = "path"
    label_column: str | None = "labels"
    label_delimiter: str = " "
    label_columns: tuple | None = None
    class_names: tuple | None = None
    data_dir: str | None = None
    arrays: dict | None = None
    classes: tuple | None = None
    train_per_class: int | None = None
    max_pixels: int = MAX_PIXELS
    cache_images: bool = True

    def __post_init__(self):
        if self.source not in SOURCES:
            raise DataError(
                f"Unknown data source {self.source!r}. Set data.source to "
                f"one of {list(SOURCES)}."
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise DataError(
                "data.validation_fraction is the share of the training data "
                "carved off for validation, in [0, 1). Received: "
                f"validation_fraction={self.validation_fraction}"
            )
        if self.max_pixels < 1:
            raise DataError(
                "data.max_pixels is the most pixels (width x height) an "
                "image may have; it must be at least 1, got "
                f"{self.max_pixels}. Leave it unset for the default "
                f"({MAX_PIXELS:,})."
            )


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation; validation and test are never augmented.

    Args:
        flip: bool. Random horizontal flip. Defaults to `True`.
        random_resized_crop: bool. Crop a random region of 8% to 100% of the
            image with an aspect ratio between 3/4 and 4/3 (as Inception
            and timm do) instead of the center crop, before resizing to the
            model's size. Defaults to `False`.
        rand_augment: int. RandAugment magnitude from 0 to 10
            (`keras.layers.RandAugment` with two ops); `0` turns it off.
            Defaults to `0`.
        mixup: float. MixUp's Beta(alpha, alpha) parameter: each batch is
            blended with a shuffled copy of itself, labels too (soft
            labels, multi-label included). `0` turns it off. Defaults to
            `0.0`.
        cutmix: float. CutMix's Beta parameter: a box of the shuffled copy
            is pasted in, labels mixed by its area. With both set, each
            batch uses one of the two at random. `0` turns it off. Defaults
            to `0.0`.

    Example:
    ```python
    augment = Augment(flip=True, random_resized_crop=True, rand_augment=9)
    ```
    """

    flip: bool = True
    random_resized_crop: bool = False
    rand_augment: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        if not 0 <= self.rand_augment <= 10:
            raise DataError(
                f"rand_augment is a magnitude from 0 to 10, got "
                f"{self.rand_augment}. Use 0 to turn RandAugment off."
            )
        if self.mixup < 0 or self.cutmix < 0:
            raise DataError(
                "mixup and cutmix are Beta distribution alphas (typically "
                "0.2 to 1.0), or 0 to turn them off; they cannot be "
                f"negative. Got mixup={self.mixup}, cutmix={self.cutmix}."
            )


@dataclasses.dataclass
class SkippedFile:
    """An input file left out of the data, and why.

    Args:
        path: str. The file.
        reason: str. Why it was left out: `"missing"`, `"empty file"`,
            `"not an image"`, `"not a regular file: ..."` (a named pipe,
            a device), `"a symbolic link loop"`, `"too large: ..."` (over
            `DataSpec.max_pixels`) or `"corrupt: ..."`.

    Example:
    ```python
    for skipped in bundle.skipped:
        print(f"{skipped.path}: {skipped.reason}")
    ```
    """

    path: str
    reason: str


@dataclasses.dataclass
class DataBundle:
    """The loaded data: batched `tf.data` splits and what they hold.

    Args:
        class_names: list of str. The classes, in label order.
        splits: dict. `"train"`, `"validation"` and, when there is one,
            `"test"`, each a `tf.data.Dataset` of `(images, labels)`
            batches.
        num_examples: dict. The number of examples in each split.
        skipped: list of `SkippedFile`. Files left out, with the reason.
        multi_label: bool. Whether labels are multi-hot.
        examples: dict or `None`. Only when loaded `ordered`: each split's
            `kerastl.data.examples.Examples` (file paths or image arrays,
            and labels) in the order its dataset yields them; `None` for
            a tfds split, whose examples come from the dataset alone.

    Example:
    ```python
    bundle = load_data(spec, image_size=(224, 224), batch_size=32,
                       multi_label=False)
    model.fit(bundle.splits["train"], validation_data=bundle.splits[
        "validation"])
    ```
    """

    class_names: list
    splits: dict
    num_examples: dict
    skipped: list
    multi_label: bool
    examples: dict | None = None
