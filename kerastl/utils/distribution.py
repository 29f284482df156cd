"""Devices and data parallelism: kerastl's one door to each backend's devices.

Everything that differs between TensorFlow, JAX and PyTorch about devices
lives here, so the rest of kerastl never asks which backend it runs on:

- `prepare_process` keeps TensorFlow (which every backend imports, for
  tf.data and keras-hub) off the GPUs when it is not the backend, applies
  the GPU memory policy, and joins a multi-process cluster when the
  launcher configured one. It must run before the first computation.
- `placement` picks how a run uses the devices: `"none"` (one device),
  `"data-parallel"` (every local device, or every device of the cluster,
  each taking an equal share of the global batch) or `"auto"` (data
  parallel when there is more than one accelerator or process).
  `Placement.scope()` wraps model creation, compilation and training.

The batch size a recipe gives is the global batch: with N devices each one
computes `batch_size / N` examples per step and the gradients are averaged,
so a run gives the same updates on one device or several.
"""

import contextlib
import dataclasses
import importlib.util
import os
import sys

MODES = ("auto", "none", "data-parallel")
# The dtype policies a run can train under (`keras.DTypePolicy` names).
PRECISIONS = ("float32", "bfloat16", "mixed_bfloat16", "mixed_float16")
GPU_MEMORY_ENV = "KERASTL_GPU_MEMORY"
# What `keras.distribution.initialize` reads: a launcher sets these on each
# process of a multi-host JAX job.
CLUSTER_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def backend_name():
    """The Keras backend this process runs, without importing Keras."""
    if "keras" in sys.modules:
        import keras

        return keras.config.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


# Per-process singletons: whether the cluster was joined, and TensorFlow's
# strategies (each may be created only once per process).
_state = {}


def check_gpu_memory(value):
    """Validates a GPU memory policy; returns it (`None` passes through).

    Args:
        value: `None` (the backend's own default), `"grow"` (claim memory
            as needed), `"preallocate"` (claim most of it at start) or a
            fraction in (0, 1] of each GPU's memory.

    Example:
    ```python
    kerastl.utils.distribution.check_gpu_memory("0.5")  # 0.5
    ```
    """
    if value is None or value in ("grow", "preallocate"):
        return value
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0.0 < fraction <= 1.0:
        raise ValueError(
            "The GPU memory policy is 'grow' (take memory as needed), "
            "'preallocate' (take most of it at start, JAX's default) or a "
            f"fraction of each GPU's memory in (0, 1]. Received: {value!r}"
        )
    return fraction


def jax_memory_env(policy):
    """The XLA client variables that give JAX a GPU memory `policy`.

    Args:
        policy: a `check_gpu_memory` value.

    Returns:
        dict of environment variables, empty for the default.

    Example:
    ```python
    kerastl.utils.distribution.jax_memory_env("grow")
    # {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    ```
    """
    policy = check_gpu_memory(policy)
    if policy is None:
        return {}
    if policy == "grow":
        return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if policy == "preallocate":
        return {"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
    return {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{policy:g}",
    }


def prepare_process(gpu_memory=None):
    """Sets up this process's devices; call before anything computes.

    - With the JAX or PyTorch backend, hides the GPUs from TensorFlow, so
      the tf.data pipeline cannot claim their memory.
    - Applies the GPU memory policy (`gpu_memory`, else the
      `KERASTL_GPU_MEMORY` environment variable): JAX through its XLA
      client variables, TensorFlow through memory growth or a memory
      limit, PyTorch through its per-process memory fraction.
    - With the JAX backend and `KERAS_DISTRIBUTION_*` set by the launcher,
      joins the multi-process cluster (`keras.distribution.initialize`).
      TensorFlow reads its cluster from `TF_CONFIG` when the strategy is
      created.

    Calling it again is harmless.

    Args:
        gpu_memory: see `check_gpu_memory`. Defaults to `None`.

    Example:
    ```python
    kerastl.utils.distribution.prepare_process(gpu_memory="grow")
    ```
    """
    policy = check_gpu_memory(gpu_memory or os.environ.get(GPU_MEMORY_ENV))
    backend = backend_name()
    if backend == "jax":
        # Read when JAX first touches a GPU, so setting them now is in time
        # unless the user's code already computed; their own settings win.
        for key, value in jax_memory_env(policy).items():
            os.environ.setdefault(key, value)
    _prepare_tensorflow(backend, policy)
    if backend == "torch" and isinstance(policy, float):
        import torch

        for index in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(policy, index)
    if backend == "jax" and _cluster_configured():
        import keras

        if not _state.get("initialized"):
            keras.distribution.initialize()
            _state["initialized"] = True


def devices_seen_by(backend):
    """The devices one installed backend sees, as `"kind:index"` strings.

    Imports that backend. After `prepare_process`, TensorFlow sees no GPU
    unless it is the Keras backend.

    Args:
        backend: `"jax"`, `"tensorflow"` or `"torch"`.

    Example:
    ```python
    kerastl.utils.distribution.devices_seen_by("jax")  # ['cpu:0']
    ```
    """
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        return [_short(d.name) for d in tf.config.list_logical_devices()]
    import torch

    return ["cpu:0", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def gpu_memory_summary():
    """One line: the GPU memory policy this process's backend runs under.

    Example:
    ```python
    kerastl.utils.distribution.gpu_memory_summary()
    # 'jax: preallocate 75% (XLA default)'
    ```
    """
    backend = backend_name()
    policy = os.environ.get(GPU_MEMORY_ENV)
    if backend == "jax":
        preallocate = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
        if preallocate.lower() in ("false", "0"):
            return "jax: grow as needed (XLA_PYTHON_CLIENT_PREALLOCATE=false)"
        fraction = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")
        return f"jax: preallocate {float(fraction):.0%} of each GPU"
    if policy:
        return f"{backend}: {policy} ({GPU_MEMORY_ENV})"
    return f"{backend}: the backend's default"


def predict_on_batch(model, images):
    """`model.predict_on_batch(images)`, also right under a TF strategy.

    Keras 3.15's TensorFlow `predict_on_batch` runs the whole batch on every
    replica of a `tf.distribute` strategy and concatenates the copies (a
    batch of 8 on 2 devices gives 16 rows); `predict` splits the batch over
    the replicas as it should.

    Args:
        model: a Keras model.
        images: a batch the devices can share evenly.

    Example:
    ```python
    logits = kerastl.utils.distribution.predict_on_batch(model, images)
    ```
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return model.predict(images, batch_size=len(images), verbose=0)
    return model.predict_on_batch(images)


def _cluster_configured():
    return all(key in os.environ for key in CLUSTER_ENV[1:])


def _prepare_tensorflow(backend, policy):
    if importlib.util.find_spec("tensorflow") is None:
        return
    import tensorflow as tf

    try:
        gpus = tf.config.list_physical_devices("GPU")
        if backend != "tensorflow":
            tf.config.set_visible_devices([], "GPU")
        elif policy == "grow":
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
        elif isinstance(policy, float):
            for index, gpu in enumerate(gpus):
                total = _nvidia_memory_bytes(index)
                tf.config.set_logical_device_configuration(
                    gpu,
                    [
                        tf.config.LogicalDeviceConfiguration(
                            memory_limit=int(policy * total / 2**20)
                        )
                    ],
                )
    except RuntimeError:
        # TensorFlow already initialized its devices: the settings can no
        # longer change, and what it did is what there is.
        pass


def _nvidia_memory_bytes(index):
    import subprocess

    out = subprocess.run(
        [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip()) * 2**20


@dataclasses.dataclass
class Placement:
    """How a run uses the devices; `scope()` wraps building and training.

    Attributes:
        mode: `"none"` or `"data-parallel"`, as resolved.
        devices: list of str, the devices that train (`"gpu:0"`, ...).
        replicas: int, how many devices share each batch.
        note: str, one line for the console: what runs where.

    Example:
    ```python
    placement = kerastl.utils.distribution.placement("auto")
    with placement.scope():
        model = kerastl.TransferClassifier.from_preset(...)
        model.fit(train)
    ```
    """

    mode: str
    devices: list
    note: str
    _scope: object = None
    _shards_evenly: bool = False

    @property
    def replicas(self):
        return len(self.devices) if self.mode == "data-parallel" else 1

    def scope(self):
        """The context in which models are built, compiled and trained."""
        return self._scope() if self._scope else contextlib.nullcontext()

    def even_batches(self, dataset):
        """Pads each batch of `dataset` so the devices can share it evenly.

        Keras' data-parallel distribution (JAX, and PyTorch where Keras
        has it) shards every batch in equal parts, so a last batch of 5
        examples cannot run on 2 devices. Padding rows repeat nothing:
        they are zeros with sample weight 0, so metrics, predictions (see
        `kerastl.evaluate.metrics.predict_split`) and gradients ignore them. The
        one trace left is in a loss averaged over a padded batch: its mean
        counts the padding rows in its divisor, shifting that one batch's
        loss by at most `(replicas - 1) / batch_size`. TensorFlow's
        strategies split uneven batches themselves, and a single device
        needs nothing: the dataset comes back as it was.

        Args:
            dataset: a batched `tf.data.Dataset` of `(x, y)` or
                `(x, y, sample_weight)`.

        Returns:
            The dataset, batches of `(x, y, sample_weight)` when padded.

        Example:
        ```python
        train = placement.even_batches(train)
        ```
        """
        if self.replicas == 1 or not self._shards_evenly:
            return dataset
        replicas = self.replicas

        def pad(x, y, weights=None):
            import tensorflow as tf

            if weights is None:
                weights = tf.ones(tf.shape(x)[:1], tf.float32)
            extra = -tf.shape(x)[0] % replicas

            def padded(t):
                zeros = tf.zeros(
                    tf.concat([[extra], tf.shape(t)[1:]], 0), t.dtype
                )
                return tf.concat([t, zeros], 0)

            return padded(x), padded(y), padded(weights)

        return dataset.map(pad)

    def check_batch_size(self, batch_size):
        """Refuses a global batch the devices cannot share evenly."""
        if batch_size % self.replicas:
            raise ValueError(
                f"batch_size={batch_size} is the global batch, split evenly "
                f"over the {self.replicas} devices of a data-parallel run; "
                f"make it a multiple of {self.replicas} (e.g. "
                f"{batch_size - batch_size % self.replicas or self.replicas}),"
                " or train on one device with --distribute none."
            )


def placement(mode="auto"):
    """Resolves a distribution mode on this process's backend and devices.

    - JAX: `keras.distribution.DataParallel` over every device of the
      default kind (all processes' devices in a multi-process job).
    - TensorFlow: `MultiWorkerMirroredStrategy` when `TF_CONFIG` describes
      a cluster, `TPUStrategy` on a TPU, else `MirroredStrategy` over the
      GPUs (or, with no GPU and an explicit `"data-parallel"`, the logical
      CPUs).
    - PyTorch: `keras.distribution.DataParallel` when the installed Keras
      supports it for PyTorch; otherwise one device, with a note saying so.

    `"auto"` is data parallel when there is more than one accelerator or
    process, else one device: several CPU devices alone do not make a CPU
    run faster.

    Args:
        mode: `"auto"`, `"none"` or `"data-parallel"`. Defaults to
            `"auto"`.

    Returns:
        A `Placement`.

    Example:
    ```python
    kerastl.utils.distribution.placement("data-parallel").note
    # 'data parallel over 2 devices: gpu:0, gpu:1'
    ```
    """
    if mode not in MODES:
        raise ValueError(
            f"distribute is one of {', '.join(MODES)}. Received: {mode!r}"
        )
    backend = backend_name()
    if backend == "tensorflow":
        return _tensorflow_placement(mode)
    return _keras_placement(mode, backend)


def _one_device(devices, reason=""):
    note = f"one device: {devices[0]}" + (f" ({reason})" if reason else "")
    return Placement("none", devices[:1], note)


def _data_parallel_note(devices):
    shown = ", ".join(devices[:8]) + (", ..." if len(devices) > 8 else "")
    return f"data parallel over {len(devices)} devices: {shown}"


def _keras_placement(mode, backend):
    import keras

    if backend == "torch" and not _keras_supports_torch_distribution():
        devices = devices_seen_by("torch")[1:] or ["cpu:0"]
        if mode == "data-parallel" or (mode == "auto" and len(devices) > 1):
            return _one_device(
                devices,
                f"Keras {keras.__version__} cannot train data parallel on "
                "the PyTorch backend, so training runs on one device; use "
                "the JAX or TensorFlow backend to train on several",
            )
        return _one_device(devices)
    devices = keras.distribution.list_devices()
    several = len(devices) > 1 and (
        mode == "data-parallel"
        or (mode == "auto" and _accelerators(devices) > 1)
    )
    if not several:
        return _one_device(devices)
    distribution = keras.distribution.DataParallel(devices=devices)
    return Placement(
        "data-parallel",
        devices,
        _data_parallel_note(devices),
        distribution.scope,
        _shards_evenly=True,
    )


def _keras_supports_torch_distribution():
    return (
        importlib.util.find_spec("keras.src.backend.torch.distribution_lib")
        is not None
    )


def _accelerators(devices):
    return sum(not d.startswith("cpu") for d in devices)


def _tensorflow_placement(mode):
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    local = [_short(name) for name in gpus or cpus]
    if mode == "none":
        return _one_device(local)
    if "TF_CONFIG" in os.environ:
        if "multi-worker" not in _state:
            # Created once per process, before other TensorFlow work.
            _state["multi-worker"] = tf.distribute.MultiWorkerMirroredStrategy()
        strategy = _state["multi-worker"]
        workers = strategy.num_replicas_in_sync
        names = [f"replica:{i}" for i in range(workers)]
        return Placement(
            "data-parallel",
            names,
            f"data parallel over {workers} replicas of a multi-worker "
            "cluster (TF_CONFIG)",
            strategy.scope,
        )
    if tf.config.list_physical_devices("TPU") or os.environ.get("TPU_NAME"):
        if "tpu" not in _state:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME", "local")
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            _state["tpu"] = tf.distribute.TPUStrategy(resolver)
        strategy = _state["tpu"]
        names = [_short(d.name) for d in tf.config.list_logical_devices("TPU")]
        return Placement(
            "data-parallel", names, _data_parallel_note(names), strategy.scope
        )
    several = len(gpus) > 1 or (mode == "data-parallel" and len(local) > 1)
    if not several:
        return _one_device(local)
    devices = tuple(gpus or cpus)
    if devices not in _state:
        # One strategy per device set and process: a second
        # MirroredStrategy over the same devices reuses the first one's
        # collective keys, and their all-reduces get mixed up.
        _state[devices] = tf.distribute.MirroredStrategy(devices=devices)
    strategy = _state[devices]
    return Placement(
        "data-parallel", local, _data_parallel_note(local), strategy.scope
    )


def _short(name):
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'gpu:1'."""
    kind, index = name.rsplit("device:", 1)[-1].split(":")
    return f"{kind.lower()}:{index}"
