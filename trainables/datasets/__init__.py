"""Datasets, registered by name (as model families are in trainables/models/): registry.py holds
the registry and ImageData; builtin.py (MNIST, Fashion-MNIST, digits and tasks derived from them)
and folder_datasets.py (CIFAR-10, CelebA, folders of images) register their datasets on import.
Importing this package registers them all."""

from trainables.datasets import builtin, folder_datasets  # noqa: F401  (register their datasets)
from trainables.datasets.registry import (DATASET_HELP, DATASETS, DatasetError, ImageData, Loader,  # noqa: F401
                                          cache_dir, dataset_options, load_dataset, register_dataset)
