"""The export formats, which backend writes which, and their names."""

FORMATS = ("saved_model", "onnx", "litert")


SUPPORTED_FORMATS = {
    "tensorflow": ("saved_model", "onnx", "litert"),
    "jax": ("saved_model", "litert"),
    "torch": ("onnx",),
}


INPUT_NAME = "images"


FORMAT_NAMES = {
    "saved_model": "a TensorFlow SavedModel",
    "onnx": "ONNX",
    "litert": "LiteRT",
}
