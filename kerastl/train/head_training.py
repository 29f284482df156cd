"""Training a model's head on cached backbone features.

While only the head trains and the data has no random augmentation, the
frozen backbone turns each image into the same pooled features every epoch.
`fit_head_cached` takes them from the feature cache (`kerastl.train.features`)
and trains the model's own head layers on them: a linear probe (or a small
MLP head) at the cost of the head alone.
"""

import math

import keras

from kerastl.train import features


def head_model(model):
    """A `keras.Model` from pooled features to predictions, sharing layers.

    It calls `model`'s own head layers (dropout, optional hidden Dense,
    predictions, temperature scaling), so training it trains `model`'s
    head: no weights to copy back.

    Args:
        model: a `kerastl.TransferClassifier`.

    Example:
    ```python
    head = kerastl.train.features.head_model(model)
    head.predict(model.feature_extractor().predict(images))
    ```
    """
    pooled = model.pooler.output
    inputs = keras.Input(
        shape=tuple(pooled.shape[1:]), dtype=pooled.dtype, name="features"
    )
    x = model.head_dropout(inputs)
    if model.head_hidden is not None:
        x = model.head_hidden(x)
    outputs = model.temperature_scaling(model.output_dense(x))
    return keras.Model(inputs, outputs, name="head")


def _check_head_only(model):
    trainable = [w.path for w in model.backbone.trainable_weights]
    if trainable:
        raise ValueError(
            "The feature cache trains the head on fixed backbone features, "
            f"but {len(trainable)} backbone weights are trainable (e.g. "
            f"{trainable[0]}). Call `model.freeze_backbone()` first, or "
            "train in-graph with `model.fit` when the backbone trains."
        )
    if model.optimizer is None:
        raise ValueError(
            "The model is not compiled. Call `model.compile(...)` with the "
            "stage's optimizer before `fit_head_cached`."
        )


def _compile_head(head, model):
    # The loss, metrics and compile options of `model`, as fresh objects
    # (metrics hold state), with `model`'s optimizer itself: its iterations
    # and learning-rate schedule carry on.
    config = dict(model.get_compile_config())
    config.pop("optimizer", None)
    config = keras.saving.deserialize_keras_object(config)
    head.compile(optimizer=model.optimizer, **config)


def _training_batches(cached, initial_epoch, epochs, shuffle_seed):
    """Every epoch's batches back to back, for `fit(steps_per_epoch=...)`.

    Epoch `e` takes the examples in stored order, or permuted by a
    stateless shuffle seeded with `(shuffle_seed, e)`: a run resumed at
    `initial_epoch` sees the orders the whole run would have seen.
    """
    import tensorflow as tf

    features = tf.constant(cached.features)
    labels = tf.constant(cached.labels)
    count = len(cached.features)

    # Plain graph code: AutoGraph has no Python control flow to convert.
    @tf.autograph.experimental.do_not_convert
    def epoch_batches(epoch):
        order = tf.range(count, dtype=tf.int64)
        if shuffle_seed is not None:
            seed = tf.stack([tf.constant(shuffle_seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed=seed)
        return tf.data.Dataset.from_tensor_slices(order).batch(
            cached.batch_size
        )

    @tf.autograph.experimental.do_not_convert
    def gather(rows):
        return tf.gather(features, rows), tf.gather(labels, rows)

    batches = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
        epoch_batches
    )
    return batches.map(gather).prefetch(tf.data.AUTOTUNE)


def _validation_batches(cached):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(
        (cached.features, cached.labels)
    ).batch(cached.batch_size)


def fit_head_cached(
    model,
    train,
    validation=None,
    *,
    epochs,
    initial_epoch=0,
    callbacks=None,
    cache_dir=None,
    shuffle_seed=None,
    verbose="auto",
    print_fn=print,
):
    """Trains `model`'s head on cached backbone features, like `model.fit`.

    For a stage that trains only the head on data without random
    augmentation. The backbone's pooled features of `train` and
    `validation` are computed once in inference mode (or loaded from the
    disk cache, see `cache_features`), and `head_model(model)`, which shares
    `model`'s head layers, is fitted on them with `model`'s optimizer, loss
    and metrics. Afterwards `model` predicts with the trained head. The
    result equals `model.fit` on the same batches with the backbone frozen,
    within float tolerance, at the cost of the head alone per epoch.

    Args:
        model: a compiled `kerastl.TransferClassifier` whose backbone is
            frozen (`model.freeze_backbone()`, then `model.compile(...)`).
        train: a `tf.data.Dataset` (or any iterable) of `(images, labels)`
            batches. Its first pass fixes the example order and the batch
            size.
        validation: a dataset like `train`, or `None`.
        epochs: int. The epoch to train up to, as in `keras.Model.fit`.
        initial_epoch: int. The epoch to start from, as in
            `keras.Model.fit`. Defaults to `0`.
        callbacks: list of Keras callbacks, run by the head model's `fit`
            (their `self.model` is the head model). Defaults to `None`.
        cache_dir: str, path-like or `None`. Root of the cache. Defaults
            to `$KERASTL_CACHE_DIR`, else `~/.cache/kerastl/features`.
        shuffle_seed: int or `None`. With an int, every epoch `e` sees the
            training examples in a new order seeded by
            `(shuffle_seed, e)`; with `None`, every epoch keeps the order of
            `train`'s first pass. Defaults to `None`.
        verbose: `"auto"`, 0, 1 or 2. Progress output, as in
            `keras.Model.fit`. Defaults to `"auto"`.
        print_fn: callable for the cache report lines. Defaults to `print`.

    Returns:
        The `keras.callbacks.History` of the head model's `fit`; its
        `.history` has the keys `model.fit` would log (`loss`, `accuracy`,
        `val_loss`, `val_accuracy`, ...).

    Example:
    ```python
    model.freeze_backbone()
    model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.9))
    history = kerastl.train.features.fit_head_cached(
        model, train_ds, val_ds, epochs=10, shuffle_seed=0
    )
    history.history["val_accuracy"]
    ```
    """
    _check_head_only(model)
    cache = features.FeatureCache(model, cache_dir)
    options = dict(verbose=verbose, print_fn=print_fn)
    train_cached = cache.read(train, name="train", **options)
    validation_data = None
    if validation is not None:
        validation_data = _validation_batches(
            cache.read(validation, name="validation", **options)
        )
    cache.report_damage(print_fn)
    head = head_model(model)
    _compile_head(head, model)
    return head.fit(
        _training_batches(train_cached, initial_epoch, epochs, shuffle_seed),
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=math.ceil(
            len(train_cached.features) / train_cached.batch_size
        ),
        callbacks=callbacks,
        verbose=verbose,
        # The batches come in the order `_training_batches` chose.
        shuffle=False,
    )
