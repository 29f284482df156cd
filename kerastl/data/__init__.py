"""Image classification data: tfds, folders, CSV files, arrays and IDX files.

`load_data(spec, ...)` returns batched `tf.data` splits for any Keras
backend: float32 RGB images in [0, 255] of the model's size, and int32 (or
multi-hot float32) labels.

Resize policy: each image is center-cropped to the target aspect ratio,
then resized bilinearly to `image_size` (keras-hub's `ImageConverter` with
`crop_to_aspect_ratio=True`); `Augment(random_resized_crop=True)` replaces
the center crop by a random one on training images. See
`kerastl.data.pipeline`.
"""

from kerastl.data.loader import load_data
from kerastl.data.spec import Augment
from kerastl.data.spec import DataBundle
from kerastl.data.spec import DataError
from kerastl.data.spec import DataSpec
from kerastl.data.spec import SkippedFile

__all__ = [
    "Augment",
    "DataBundle",
    "DataError",
    "DataSpec",
    "SkippedFile",
    "load_data",
]
