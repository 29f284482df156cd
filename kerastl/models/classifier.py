"""`TransferClassifier`: a keras-hub backbone with a classification head."""

import warnings

import keras

from kerastl.models import catalog
from kerastl.models import compile_defaults as defaults
from kerastl.models import decisions
from kerastl.models import freezing
from kerastl.models import grouping
from kerastl.models import head
from kerastl.models import presets
from kerastl.utils import atomic
from kerastl.utils import keras_internals


@keras.saving.register_keras_serializable(package="kerastl")
class TransferClassifier(keras.Model):
    """An image classifier built on a pretrained keras-hub backbone.

    The model takes raw images and returns class probabilities:

    - **Input**: a batch of RGB images, `(batch, height, width, 3)`, channels
      last, with pixel values in `[0, 255]`, as `uint8` or float, of the
      preset's input size (`model.image_size`, e.g. 224x224). The model's
      `image_converter`, the preset's own preprocessing, rescales and
      normalizes them exactly as the backbone was pretrained: do not rescale
      or normalize images yourself. Resize images of other sizes first (the
      kerastl data pipeline does).
    - **Output**: `(batch, num_classes)` float32. With `multi_label=False`
      a softmax: one probability distribution over the classes. With
      `multi_label=True` a sigmoid: an independent probability per class.
      With `activation=None`, logits instead.

    Layers, input to output: `image_converter`, `backbone`, `pooler`
    (`FeaturePooling`), `head_dropout`, optionally `head_hidden` (Dense +
    ReLU), `predictions` (Dense, the logits) and `temperature_scaling`
    (divides the logits by `temperature`, then applies the softmax or
    sigmoid). The head computes in `head_dtype` (float32 by default) even
    under a mixed-precision policy.

    Calibration and multi-label decisions travel with the model: a
    `temperature` fitted on validation logits
    (`kerastl.evaluate.calibration.fit_temperature`) and per-class `thresholds`
    (`kerastl.evaluate.thresholds.tune_thresholds`) are part of its config, its
    presets and its exports.

    The model compiles itself with `compile()`'s `"auto"` settings, so `fit`
    works at once. `freeze_backbone` and `unfreeze_backbone` recompile after
    changing what trains, and `fit` recompiles (with a warning) if
    `trainable` was changed by hand since the last `compile`: Keras ignores
    such changes until the model is compiled again.

    Args:
        backbone: a `keras_hub.models.Backbone` that outputs a feature map or
            a token sequence (ResNet, ViT, DeiT, DINOv2, EfficientNet,
            MobileNet and the other keras-hub image backbones).
        num_classes: int. Number of classes.
        image_converter: a `keras_hub.layers.ImageConverter`: the resize and
            normalization the backbone's weights expect.
            `TransferClassifier.from_preset` loads the preset's own.
        multi_label: bool. `False` for one class per image (softmax head),
            `True` for any number of classes per image (sigmoid head).
            Defaults to `False`.
        activation: `"auto"`, `"softmax"`, `"sigmoid"` or `None`. `"auto"`
            picks softmax or sigmoid from `multi_label`; `None` outputs
            logits. Defaults to `"auto"`.
        pooling: str. How the backbone output becomes one vector: `"auto"`
            (global average for feature maps, the class token for token
            sequences that have one, else the token mean), `"avg"`, `"max"`,
            `"token"` or `"mean_tokens"`. Defaults to `"auto"`.
        dropout: float. Dropout rate before the head's Dense layers.
            Defaults to `0.0`.
        hidden_dim: int or `None`. Width of an optional hidden Dense + ReLU
            layer in the head. Defaults to `None` (a single Dense layer).
        class_names: list of str or `None`. Names of the classes, in label
            order; stored in the config and in presets. Defaults to `None`.
        head_dtype: str or `keras.DTypePolicy`. The dtype the head computes
            in. Defaults to `"float32"`.
        trainable_groups: int or `None`. How many backbone layer groups,
            counted from the output, train; the rest are frozen. `0` freezes
            the backbone. `None` leaves every layer as Keras built it (all
            trainable). Set by `freeze_backbone` and `unfreeze_backbone` and
            saved with the model, so a reloaded model trains the same layers.
            Defaults to `None`.
        train_bn: bool. Whether BatchNorm layers of trainable groups train.
            Defaults to `False`.
        temperature: float > 0. The logits are divided by it before the
            activation: temperature scaling. Defaults to `1.0` (none).
        thresholds: list of floats or `None`. Multi-label only: per-class
            decision thresholds on the probabilities, used by
            `predict_labels`, `kerastl predict`, evaluation and exports.
            `None` means 0.5 for every class. Defaults to `None`.
        **kwargs: standard `keras.Model` arguments (`name`, ...).

    Example:
    ```python
    import keras_hub
    import kerastl

    model = kerastl.TransferClassifier.from_preset(
        "resnet_50_imagenet", num_classes=37
    )
    model.freeze_backbone()
    model.fit(train_ds, validation_data=val_ds, epochs=3)
    model.unfreeze_backbone(last_n=1)
    model.fit(train_ds, validation_data=val_ds, epochs=2)

    # Any backbone, built or loaded with keras-hub.
    backbone = keras_hub.models.ViTBackbone.from_preset(
        "vit_base_patch16_224_imagenet"
    )
    converter = keras_hub.layers.ImageConverter.from_preset(
        "vit_base_patch16_224_imagenet"
    )
    model = kerastl.TransferClassifier(
        backbone, num_classes=20, image_converter=converter, multi_label=True
    )
    ```
    """

    def __init__(
        self,
        backbone,
        num_classes,
        image_converter,
        multi_label=False,
        activation="auto",
        pooling="auto",
        dropout=0.0,
        hidden_dim=None,
        class_names=None,
        head_dtype="float32",
        trainable_groups=None,
        train_bn=False,
        temperature=1.0,
        thresholds=None,
        **kwargs,
    ):
        head.check_head_args(num_classes, multi_label, activation, pooling)
        class_names = head.check_class_names(class_names, num_classes)
        thresholds = decisions.check_thresholds(
            thresholds, num_classes, multi_label
        )

        # === Layers ===
        self.backbone = backbone
        self.image_converter = image_converter
        layers = head.head_layers(
            backbone,
            num_classes,
            multi_label=multi_label,
            activation=activation,
            pooling=pooling,
            dropout=dropout,
            hidden_dim=hidden_dim,
            temperature=temperature,
            dtype=head_dtype,
        )
        self.pooler, self.head_dropout, self.head_hidden = layers[:3]
        self.output_dense, self.temperature_scaling = layers[3:]

        # === Functional Model ===
        # A fixed input size: symbolic resizing of unknown sizes fails on
        # JAX, and every backend compiles faster for static shapes.
        inputs = keras.Input(
            shape=head.input_shape(backbone, image_converter), name="images"
        )
        # Kept for `logits_model`: the Dense layer's output cannot be looked
        # up later once the feature cache's head model has called it too.
        self._logits_tensor = head.logits(
            inputs, image_converter, backbone, layers[:4]
        )
        outputs = self.temperature_scaling(self._logits_tensor)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        head.initialize_dense(self.head_hidden, self.output_dense)

        # === Config ===
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.activation = activation
        self.pooling = pooling
        self.dropout = dropout
        self.hidden_dim = hidden_dim
        self.class_names = class_names
        self.head_dtype = head_dtype
        self.temperature = self.temperature_scaling.temperature
        self.thresholds = thresholds
        self._set_trainable_groups(trainable_groups, train_bn)
        self.compile()

    def __setattr__(self, name, value):
        # On the torch backend a Keras model is a `torch.nn.Module`, which
        # refuses sublayers assigned before `Module.__init__`; the layers set
        # ahead of the functional `__init__` are all reachable through the
        # functional graph, so plain assignment is enough (as in keras-hub's
        # `Task`). Keras' own `_torch_params`, set once the graph is built,
        # must go through `Module.__setattr__`: that registers the weights
        # as torch parameters, which `zero_grad()` clears before every step.
        uninitialized = not hasattr(self, "_initialized")
        torch = keras.config.backend() == "torch"
        if torch and uninitialized and name != "_torch_params":
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def call(self, inputs, training=False, mask=None):
        # Inference unless told otherwise. With Keras' default `None`, the
        # converter's `Resizing` (which defaults to `training=True`) would
        # set training mode in Keras' shared call context, and a direct
        # `model(images)` would run the backbone's BatchNorm in training
        # mode and overwrite its moving statistics. `fit` passes `True`.
        return super().call(inputs, training=training, mask=mask)

    @property
    def head_layers(self):
        """The layers after the backbone: pooler, dropout, hidden, output."""
        layers = [self.pooler, self.head_dropout, self.head_hidden]
        layers += [self.output_dense, self.temperature_scaling]
        return [layer for layer in layers if layer]

    @property
    def image_size(self):
        """`(height, width)` of the images the model takes."""
        return tuple(self.input.shape[1:3])

    @property
    def outputs_logits(self):
        """Whether the model outputs logits (`activation=None`)."""
        return self.activation is None

    # === Freezing ===

    def layer_groups(self):
        """The backbone's layer groups, input to output.

        ResNet: `stem`, then one group per stage (`stack0`, ...). ViT: the
        patch embedding, one group per transformer block, the final norm.
        Other families are split by their stage names or repeated blocks.

        Returns:
            A list of `kerastl.models.grouping.LayerGroup` (`name`, `layers`).

        Example:
        ```python
        [group.name for group in model.layer_groups()]
        ```
        """
        return grouping.layer_groups(self.backbone)

    def freeze_backbone(self):
        """Freezes the whole backbone, so only the head trains, and recompiles.

        BatchNorm layers of a frozen backbone run in inference mode.

        Example:
        ```python
        model.freeze_backbone()
        model.fit(train_ds, epochs=3)
        ```
        """
        self._set_trainable_groups(0, train_bn=False)
        self._recompile()

    def unfreeze_backbone(self, last_n=None, train_bn=False):
        """Unfreezes the last `last_n` layer groups (all if `None`), recompiles.

        Groups before them stay frozen. BatchNorm layers stay in inference
        mode (moving statistics frozen, affine weights frozen) unless
        `train_bn=True`. The optimizer starts afresh after the recompile;
        with `optimizer="auto"` its learning rate drops to the backbone
        family's fine-tuning rate.

        Args:
            last_n: int or `None`. Number of groups, counted from the output,
                to train. Defaults to `None`: every group.
            train_bn: bool. Whether BatchNorm layers of the unfrozen groups
                train. Defaults to `False`.

        Example:
        ```python
        model.unfreeze_backbone(last_n=1)  # last ResNet stage / ViT norm
        model.fit(train_ds, epochs=2)
        ```
        """
        if last_n is None:
            last_n = len(self.layer_groups())
        self._set_trainable_groups(last_n, train_bn)
        self._recompile()

    def _set_trainable_groups(self, last_n, train_bn):
        # `None` leaves every layer as Keras built it, BatchNorm included.
        if last_n is None:
            train_bn = False
        else:
            freezing.set_backbone_trainable(
                self.backbone, self.layer_groups(), last_n, train_bn=train_bn
            )
        self.trainable_groups = last_n
        self.train_bn = train_bn

    def trainable_summary(self, print_fn=None):
        """Prints trainable/frozen parameters and BatchNorm mode per group.

        Args:
            print_fn: callable or `None`. Called with the table as one
                string. Defaults to `print`.

        Example:
        ```python
        model.unfreeze_backbone(last_n=1)
        model.trainable_summary()
        ```
        """
        table = freezing.format_audit(freezing.trainable_audit(self))
        (print_fn or print)(table)

    # === Compilation ===

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        *,
        label_smoothing=0.0,
        soft_labels=False,
        **kwargs,
    ):
        """Configures the model for training, with defaults matching the head.

        Args:
            optimizer: `"auto"`, an optimizer name or instance. `"auto"` is
                `keras.optimizers.Adam` with learning rate 1e-3 while only the
                head trains, and the backbone family's fine-tuning rate (1e-4
                for convnets, 1e-5 for transformers) once any of the backbone
                trains. Defaults to `"auto"`.
            loss: `"auto"`, a loss name or instance. `"auto"` is
                `SparseCategoricalCrossentropy` (integer labels) for a softmax
                head and `BinaryCrossentropy` (0/1 label vectors) for a
                sigmoid head, with `from_logits` matching `activation`. A loss
                that does not match the head is an error. Defaults to
                `"auto"`.
            metrics: `"auto"` or a list of metrics. `"auto"` is accuracy for
                a softmax head, binary accuracy and multi-label AUC for a
                sigmoid head. Defaults to `"auto"`.
            label_smoothing: float. Label smoothing of the `"auto"` loss.
                Defaults to `0.0`.
            soft_labels: bool. Whether training labels of a softmax head
                may be class distributions (MixUp, CutMix) rather than
                integers; the `"auto"` loss and accuracy then take both
                (`kerastl.models.losses.SoftTargetCrossentropy`). Label
                smoothing implies it. Defaults to `False`.
            **kwargs: other `keras.Model.compile` arguments.

        Example:
        ```python
        model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
        ```
        """
        arguments = dict(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            label_smoothing=label_smoothing,
            soft_labels=soft_labels,
            **kwargs,
        )
        super().compile(**defaults.compile_arguments(self, arguments))
        self._compile_state = defaults.CompileState(arguments, self)

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; without it a
        # loaded model would lose its optimizer and the optimizer's state.
        config = keras.saving.deserialize_keras_object(config)
        # `jit_compile` was resolved for the backend that saved the model:
        # JAX's `True` means torch.compile on PyTorch, which recompiles for
        # every batch shape and floods the console. Each backend picks its
        # own, as a new model does.
        config.pop("jit_compile", None)
        self.compile(**config)
        self.optimizer.build(self.trainable_variables)

    def _recompile(self):
        if self._compile_state is not None:
            self.compile(**self._compile_state.recompile_kwargs())

    def fit(self, x=None, y=None, *args, **kwargs):
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset) and not args:
            # A dataset brings its own order; Keras' default `shuffle=True`
            # cannot apply to it and only triggers a warning on every call.
            kwargs.setdefault("shuffle", False)
        state = self._compile_state
        if state is not None and state.is_stale(self):
            warnings.warn(
                "Layers were frozen or unfrozen after the model was compiled, "
                "and Keras only applies `trainable` changes at compile time. "
                "kerastl recompiled the model with the same settings (the "
                "optimizer starts afresh). Use `freeze_backbone()` / "
                "`unfreeze_backbone()`, which recompile for you.",
                stacklevel=2,
            )
            self._recompile()
        return super().fit(x, y, *args, **kwargs)

    # === Features ===

    def feature_extractor(self):
        """A `keras.Model` from raw images to the pooled backbone features.

        It shares layers (and weights) with this model, so it is what the
        head sees: preprocessing, backbone, pooling.

        Example:
        ```python
        features = model.feature_extractor().predict(images)
        features.shape  # (num_images, backbone feature width)
        ```
        """
        return keras.Model(self.input, self.pooler.output, name="features")

    def logits_model(self):
        """A `keras.Model` from raw images to the head's logits.

        It shares this model's layers; its outputs are the logits before
        temperature scaling and activation: what
        `kerastl.evaluate.calibration.fit_temperature` fits on.

        Example:
        ```python
        logits = model.logits_model().predict(images)
        ```
        """
        return keras.Model(self.input, self._logits_tensor, name="logits")

    # === Calibration and decisions ===

    def set_temperature(self, temperature):
        """Sets the temperature the logits are divided by.

        Args:
            temperature: float > 0. `1.0` turns temperature scaling off.

        Example:
        ```python
        model.set_temperature(1.7)
        model.predict(images)  # softmax(logits / 1.7)
        ```
        """
        temperature = decisions.check_temperature(temperature)
        self.temperature_scaling.temperature = temperature
        self.temperature = temperature
        # Compiled functions captured the old value as a constant.
        keras_internals.forget_compiled_functions(self)

    def set_thresholds(self, thresholds):
        """Sets the per-class decision thresholds of a multi-label model.

        Args:
            thresholds: list of floats in (0, 1], one per class, or `None`
                for 0.5 everywhere.

        Example:
        ```python
        model.set_thresholds([0.3] * model.num_classes)
        ```
        """
        self.thresholds = decisions.check_thresholds(
            thresholds, self.num_classes, self.multi_label
        )

    def predict_labels(self, images, **kwargs):
        """Predicted labels: class indices, or multi-hot over thresholds.

        Multi-class models give the top class of each image; multi-label
        models every class whose probability reaches its threshold
        (`thresholds`, else 0.5).

        Args:
            images: what `predict` takes.
            **kwargs: other `predict` arguments.

        Example:
        ```python
        model.predict_labels(images)  # (n,) ints, or (n, num_classes) 0/1
        ```
        """
        probs = keras.ops.convert_to_numpy(self.predict(images, **kwargs))
        if self.multi_label:
            return decisions.apply_thresholds(probs, self.thresholds)
        return probs.argmax(axis=-1)

    # === Saving ===

    def save(self, filepath, overwrite=True, **kwargs):
        """Saves the model as a `.keras` file, atomically.

        The file is written under a temporary name next to `filepath` and
        moved into place, so an interrupted save never leaves a broken file.
        `keras.models.load_model` restores the model, with no custom objects.

        Args:
            filepath: str or path-like ending in `.keras`.
            overwrite: bool. Whether to replace an existing file. Defaults to
                `True`.
            **kwargs: other `keras.Model.save` arguments.

        Example:
        ```python
        model.save("pets.keras")
        restored = keras.models.load_model("pets.keras")
        ```
        """
        if not str(filepath).endswith(".keras"):
            raise ValueError(
                "TransferClassifier saves to the `.keras` format; use "
                "`save_to_preset` for a preset directory or `export` for "
                f"serving formats. Received: filepath={filepath}"
            )
        if self.optimizer is not None and not self.optimizer.built:
            # A loaded model's optimizer is built for its trainable weights
            # (see `compile_from_config`); save one with the same slots.
            self.optimizer.build(self.trainable_variables)
        with atomic.atomic_path(filepath, suffix=".keras") as tmp:
            super().save(tmp, overwrite=overwrite, **kwargs)

    def save_to_preset(self, preset_dir):
        """Saves the model as a preset directory, atomically.

        The directory is a keras-hub backbone preset (loadable with
        `keras_hub.models.Backbone.from_preset`) plus the head's config
        (classes, class names, multi-label, pooling) and weights.
        `TransferClassifier.from_preset(preset_dir)` restores the whole model.

        Args:
            preset_dir: str or path-like. Created, or replaced whole.

        Example:
        ```python
        model.save_to_preset("pets_preset")
        model = kerastl.TransferClassifier.from_preset("pets_preset")
        ```
        """
        presets.save_preset(self, preset_dir)

    @classmethod
    def from_preset(
        cls,
        preset,
        num_classes=None,
        *,
        multi_label=None,
        class_names=None,
        load_weights=True,
        image_converter=None,
        **kwargs,
    ):
        """Builds a classifier from a preset.

        `preset` can be a keras-hub preset name (`"resnet_50_imagenet"`,
        `"vit_base_patch16_224_imagenet"`; `kerastl presets` lists them), a
        `kaggle://` or `hf://` handle, or a local directory in keras-hub,
        Hugging Face transformers (ViT, DeiT, DINOv2) or timm format; keras-hub
        converts the latter two. The backbone's pretrained weights and the
        preset's image preprocessing are loaded; a preset's own
        classification head is not.

        A directory written by `save_to_preset` restores the whole model:
        head, class names and multi-label. Passing a different `num_classes`,
        a head shape argument, or `class_names` other than the saved ones
        replaces its head with a new one.

        Args:
            preset: str or path-like. The preset.
            num_classes: int or `None`. Number of classes. May be left out for
                a kerastl preset, or when `class_names` is given.
            multi_label: bool or `None`. Sigmoid head if `True`. `None` keeps
                a kerastl preset's setting, else means `False`.
            class_names: list of str or `None`. Names of the classes.
            load_weights: bool. Whether to load pretrained weights. Defaults
                to `True`.
            image_converter: a `keras_hub.layers.ImageConverter` or `None`.
                Overrides the preset's preprocessing. Defaults to `None`.
            **kwargs: other `TransferClassifier` arguments (`pooling`,
                `dropout`, `hidden_dim`, `activation`, `head_dtype`), and
                `dtype`: the backbone's dtype policy, e.g.
                `"mixed_bfloat16"` (mixed precision; the head stays in
                `head_dtype`).

        Example:
        ```python
        model = kerastl.TransferClassifier.from_preset(
            "resnet_50_imagenet", num_classes=37
        )
        model = kerastl.TransferClassifier.from_preset(
            "./vit-hf-checkpoint", class_names=["cat", "dog"]
        )
        ```
        """
        preset = str(preset)
        catalog.check_preset(preset)
        head, reuse_head = presets.head_arguments(
            preset, num_classes, multi_label, class_names, kwargs
        )
        model = cls(
            backbone=presets.load_backbone(
                preset, load_weights=load_weights, dtype=head.pop("dtype", None)
            ),
            image_converter=image_converter
            or presets.load_image_converter(preset),
            **head,
        )
        if reuse_head and load_weights:
            presets.load_head_weights(model, preset)
        return model

    def head_config(self):
        """The config of everything but the backbone and the converter."""
        return {
            "num_classes": self.num_classes,
            "multi_label": self.multi_label,
            "activation": self.activation,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "hidden_dim": self.hidden_dim,
            "class_names": self.class_names,
            "trainable_groups": self.trainable_groups,
            "train_bn": self.train_bn,
            "temperature": self.temperature,
            "thresholds": self.thresholds,
            "head_dtype": self.head_dtype
            if isinstance(self.head_dtype, str)
            else keras.dtype_policies.serialize(self.head_dtype),
        }

    def get_config(self):
        # Don't chain to Functional's config: it would nest every backbone
        # layer. Like keras-hub's `Task`, store the constructor arguments.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "image_converter": keras.layers.serialize(self.image_converter),
            **self.head_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "image_converter"):
            if isinstance(config[key], dict):
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)
