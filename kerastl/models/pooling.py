"""`FeaturePooling`: one vector per image from a feature map or tokens."""

import keras

POOLING_MODES = ("avg", "max", "token", "mean_tokens")


@keras.saving.register_keras_serializable(package="kerastl")
class FeaturePooling(keras.layers.Layer):
    """Pools a backbone's output into one feature vector per image.

    Feature maps `(batch, height, width, channels)` are pooled with `"avg"` or
    `"max"` over the spatial axes. Token sequences `(batch, tokens, channels)`
    are pooled with `"token"` (the first token: the class token of ViT-style
    models) or `"mean_tokens"` (the mean of the patch tokens, skipping the
    `num_prefix_tokens` class/distillation/register tokens at the start);
    `"avg"` and `"max"` pool all tokens.

    Args:
        mode: str. One of `"avg"`, `"max"`, `"token"`, `"mean_tokens"`.
        num_prefix_tokens: int. Leading non-patch tokens that `"mean_tokens"`
            skips. Defaults to `0`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    pooling = kerastl.models.pooling.FeaturePooling("token")
    pooling(np.ones((2, 50, 16))).shape  # (2, 16)
    ```
    """

    def __init__(self, mode, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(
                f"`mode` must be one of {', '.join(POOLING_MODES)}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens

    def _check_shape(self, shape):
        if self.mode in ("token", "mean_tokens") and len(shape) != 3:
            raise ValueError(
                f"Pooling mode {self.mode!r} needs a token sequence "
                "(batch, tokens, channels); this backbone outputs a feature "
                f"map of shape {tuple(shape)}. Use pooling='avg' or 'max'. "
                f"Received: mode={self.mode!r}"
            )

    def call(self, inputs):
        rank = len(inputs.shape)
        spatial_axes = tuple(range(1, rank - 1))
        if self.mode == "avg":
            return keras.ops.mean(inputs, axis=spatial_axes)
        if self.mode == "max":
            return keras.ops.max(inputs, axis=spatial_axes)
        if self.mode == "token":
            return inputs[:, 0, :]
        return keras.ops.mean(inputs[:, self.num_prefix_tokens :, :], axis=1)

    def compute_output_shape(self, input_shape):
        self._check_shape(input_shape)
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"mode": self.mode, "num_prefix_tokens": self.num_prefix_tokens}
        )
        return config
