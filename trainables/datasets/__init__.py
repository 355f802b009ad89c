"""Datasets, registered by name (as model families are in trainables/models/): registry.py holds
the registry and ImageData; builtin.py (MNIST, Fashion-MNIST, digits and tasks derived from them),
cifar.py (CIFAR-10), celeba.py (CelebA), folders.py (folders of images) and rotations.py (the
rotation sets of data without labels, for their FID/KID feature networks) register their datasets
on import; images.py (decoding image files once, with a cache) and splits.py (held-out splits)
are their helpers. Importing this package registers them all."""

from trainables.datasets import builtin, cifar, celeba, folders, rotations  # noqa: F401  (register their datasets, in this order)
from trainables.datasets.registry import (DATASET_HELP, DATASETS, DatasetError, ImageData, Loader,  # noqa: F401
                                          cache_dir, dataset_options, load_dataset, register_dataset)
