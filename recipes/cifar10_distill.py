"""CIFAR-10: a ResNet-50 student distilled from a fine-tuned ViT-B/16 teacher.

Train the teacher first, then the student:

KERAS_BACKEND=jax kerastl fit recipes/cifar10_vit.py
KERAS_BACKEND=jax kerastl fit recipes/cifar10_distill.py

`teacher="runs/cifar10_vit"` is the folder `kerastl fit` writes
cifar10_vit's runs to (runs/<name>/<timestamp>); the run whose model.keras
was written last is the teacher. Any other run directory, `.keras` file or
`save_to_preset` directory of a CIFAR-10 classifier works too:
`--set teacher=PATH`. The student trains on
alpha * cross-entropy + (1 - alpha) * T^2 * KL(teacher_T || student_T)
(Hinton et al. 2015); only the student is saved. Both models take 224x224
images here; a teacher of another size gets each batch resized to its own.
"""

from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

# cifar10_resnet's optimizer: SGD, momentum 0.9, lr 1e-3, weight decay 1e-4.
SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4)

recipe = Recipe(
    name="cifar10_distill",
    preset="resnet_50_imagenet",
    data=DataSpec(
        "tfds",
        "cifar10",
        train="train[:90%]",  # the split cifar10_vit's teacher trained on
        validation="train[90%:]",
        test="test",
    ),
    # 32x32 images are upsampled to the preset's 224x224 by the pipeline.
    batch_size=64,
    augment=Augment(flip=True),  # the teacher sees the same flipped batch
    teacher="runs/cifar10_vit",
    # Weight of the labels; 0.9 goes to the teacher. Hinton et al. got their
    # best results with a considerably lower weight on the hard labels.
    distill_alpha=0.1,
    # Hinton et al. found 2.5-4 best for students much smaller than their
    # teacher; T=4 still lets the near-one-hot CIFAR-10 teacher show which
    # wrong classes are close (cat/dog, automobile/truck).
    distill_temperature=4.0,
    stages=(
        Stage(name="head", epochs=2, train="head", learning_rate=1e-2, **SGD),
        Stage(name="all", epochs=3, train="all", learning_rate=1e-3, **SGD),
    ),
)
