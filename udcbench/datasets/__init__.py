"""Dataset adapters: RAF-DB, FERPlus, KDEF, image folders and the built-in synthetic faces.

Every adapter yields :class:`Sample` (image, canonical label, split, id, optional landmarks)
and never modifies its source folder::

    from udcbench.datasets import create_dataset
    ds = create_dataset("ferplus", "data/ferplus", label_mode="majority")
    for sample in ds.samples("valid"):
        ...
"""

from udcbench.datasets import ferplus, hfdisk, imagefolder, kdef, rafdb, synthetic  # noqa: F401  (registration)
from udcbench.datasets.base import (
    SPLITS,
    DatasetAdapter,
    DatasetSpec,
    Record,
    Sample,
    class_counts,
    create_dataset,
    dataset_names,
    detect_dataset,
    get_adapter_class,
    read_image,
    register_dataset,
)

__all__ = [
    "SPLITS",
    "DatasetAdapter",
    "DatasetSpec",
    "Record",
    "Sample",
    "class_counts",
    "create_dataset",
    "dataset_names",
    "detect_dataset",
    "get_adapter_class",
    "read_image",
    "register_dataset",
]
