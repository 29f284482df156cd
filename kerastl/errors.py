"""The errors a user can cause, and fix; the CLI shows each as one paragraph.

Library code raises these (and `ValueError`s of its own, such as
`kerastl.data.DataError`); only `kerastl.cli` turns them into Click errors,
so the library never depends on its command line. Every message says what
happened and what to do.
"""


class RecipeError(ValueError):
    """A recipe file or `--set` override the user must fix.

    Example:
    ```python
    try:
        recipe = kerastl.runs.recipe.load_recipe("recipes/pets.py")
    except kerastl.errors.RecipeError as error:
        print(error)
    ```
    """


class PresetError(ValueError):
    """A preset that exists but cannot be loaded.

    Example:
    ```python
    raise kerastl.errors.PresetError("Preset 'x' could not be loaded: ...")
    ```
    """


class RunDirError(ValueError):
    """A run or output directory that cannot be used as asked; nothing was
    written.

    Example:
    ```python
    try:
        kerastl.runs.rundir.check_output_dir("my_photos")
    except kerastl.errors.RunDirError as error:
        print(error)
    ```
    """


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is restored into.

    Example:
    ```python
    try:
        checkpoint.restore(model)
    except kerastl.errors.CheckpointError as error:
        print(error)
    ```
    """


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped.

    The message names the stage, epoch and step, and the checkpoint of the
    last good epoch when there is one.

    Example:
    ```python
    try:
        kerastl.fine_tune(model, train_ds, val_ds, stages)
    except kerastl.errors.TrainingDiverged as error:
        print(error)
    ```
    """


class OfflineError(ConnectionError):
    """Something had to be downloaded and the network could not be reached.

    The message names what could not be fetched and the ways on without a
    network.

    Example:
    ```python
    try:
        model = kerastl.TransferClassifier.from_preset("resnet_50_imagenet")
    except kerastl.errors.OfflineError as error:
        print(error)
    ```
    """
