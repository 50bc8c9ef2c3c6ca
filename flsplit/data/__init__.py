"""Image datasets: readers and cache, flwr-datasets partitioning, augmentation, batches."""

from flsplit.data.errors import DatasetError, DatasetNotFoundError
from flsplit.data.loader import PartitionLoader, eval_indices, test_tensors
from flsplit.data.partition import partition_indices
from flsplit.data.sources import BUILT_IN, HF_PREFIX, DataOptions, Dataset, ImageSet, describe_dataset, load_dataset

__all__ = [
    "BUILT_IN",
    "HF_PREFIX",
    "DataOptions",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "ImageSet",
    "PartitionLoader",
    "describe_dataset",
    "eval_indices",
    "load_dataset",
    "partition_indices",
    "test_tensors",
]
