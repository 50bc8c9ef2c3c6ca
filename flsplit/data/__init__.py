"""CIFAR data: readers and cache, flwr-datasets partitioning, augmentation, batches."""

from flsplit.data.loader import PartitionLoader, eval_indices, test_tensors
from flsplit.data.partition import partition_indices
from flsplit.data.sources import Dataset, DatasetNotFoundError, ImageSet, load_dataset

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "ImageSet",
    "PartitionLoader",
    "eval_indices",
    "load_dataset",
    "partition_indices",
    "test_tensors",
]
