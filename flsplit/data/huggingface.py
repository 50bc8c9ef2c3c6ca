"""Hugging Face image datasets through flwr-datasets: ``dataset = "hf:<name>"``.

This is the Flower convention (``FederatedDataset(dataset="uoft-cs/cifar10", ...)``); flsplit
loads the full ``train`` and ``test`` splits through it and partitions them itself, as it does
for every dataset. The image and label columns are detected from the features (an ``Image``
and a ``ClassLabel`` column) or named by the run-config keys ``image-column`` and
``label-column``. Decoded arrays are cached as CIFAR's are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flsplit.data.errors import DatasetError, DatasetNotFoundError, corrupt
from flsplit.data.imagefolder import ImageOptions, stack_images, stratified_split, to_array

if TYPE_CHECKING:
    from datasets import Dataset as HFDataset
    from datasets import DatasetDict

_LABEL_NAMES = ("label", "labels", "fine_label", "target")


def load_hf(repo: str, data_dir: str = "") -> DatasetDict:
    """The dataset's splits: from ``data_dir`` if it holds a ``save_to_disk`` copy, else the Hub.

    Without network the Hub cannot be reached; the error then names the dataset and says how to
    pass a local copy with ``data-dir``.
    """
    from datasets import load_from_disk  # noqa: PLC0415 - HF datasets takes seconds to import

    saved = Path(data_dir).expanduser()
    if data_dir and (saved / "dataset_dict.json").exists():
        try:
            return load_from_disk(str(saved))
        except (ValueError, OSError, KeyError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise corrupt(saved, err, f"save it again with `datasets.load_dataset('{repo}').save_to_disk(DIR)`") from None
    from flwr_datasets import FederatedDataset  # noqa: PLC0415

    kwargs = {"cache_dir": str(Path(data_dir).expanduser())} if data_dir else {}
    try:
        fds = FederatedDataset(dataset=repo, partitioners={"train": 1}, shuffle=False, **kwargs)
        fds.load_split("train")
        return fds._dataset  # noqa: SLF001 - every split, as loaded (load_split returns one)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, no access: all "not available"
        raise DatasetNotFoundError(
            f"dataset: cannot load the Hugging Face dataset '{repo}' ({type(err).__name__}: {err}). "
            f"Offline? Where there is network, save it with `datasets.load_dataset('{repo}').save_to_disk(DIR)` "
            "and pass that folder (or a Hugging Face cache folder holding it) as the run-config key data-dir"
        ) from None


def detect_columns(dataset: HFDataset, image_column: str = "", label_column: str = "") -> tuple[str, str]:
    """``(image column, label column)``: the named ones, else the ``Image`` and ``ClassLabel`` features."""
    from datasets import ClassLabel, Image  # noqa: PLC0415

    features = dataset.features
    columns = list(features)
    for key, given in (("image-column", image_column), ("label-column", label_column)):
        if given and given not in features:
            raise DatasetError(f"{key}: no column '{given}' in the dataset; its columns are {columns}")
    image = image_column or next((c for c in columns if isinstance(features[c], Image)), "")
    if not image:
        raise DatasetError(f"image-column: no image column found among {columns}; name it with image-column")
    label = label_column or next((c for c in columns if isinstance(features[c], ClassLabel)), "")
    label = label or next((c for c in _LABEL_NAMES if c in features), "")
    if not label:
        raise DatasetError(f"label-column: no label column found among {columns}; name it with label-column")
    return image, label


def class_names(dataset: HFDataset, label: str) -> list[str]:
    """The class names: a ``ClassLabel``'s own, else the distinct label values, sorted."""
    from datasets import ClassLabel  # noqa: PLC0415

    feature = dataset.features[label]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return [str(v) for v in sorted(set(dataset[label]))]


def _decode_split(dataset: HFDataset, image: str, label: str, classes: list[str], options: ImageOptions, where: str) -> tuple[np.ndarray, np.ndarray]:
    from datasets import ClassLabel  # noqa: PLC0415

    is_class_label = isinstance(dataset.features[label], ClassLabel)
    index = {name: i for i, name in enumerate(classes)}
    arrays, labels, names = [], [], []
    for row, sample in enumerate(dataset.select_columns([image, label])):
        names.append(f"{where}[{row}]")
        arrays.append(to_array(sample[image], names[-1], options.image_size))
        value = sample[label]
        labels.append(int(value) if is_class_label else index[str(value)])
    return stack_images(arrays, names, options.image_size, where), np.asarray(labels, dtype=np.int64)


def read_hf(
    splits: DatasetDict, repo: str, options: ImageOptions, image_column: str = "", label_column: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Decode ``train`` and ``test`` (or a held-out ``test-fraction`` of train) to arrays."""
    if "train" not in splits:
        raise DatasetError(f"dataset: '{repo}' has no 'train' split; its splits are {list(splits)}")
    train = splits["train"]
    image, label = detect_columns(train, image_column, label_column)
    classes = class_names(train, label)
    if "test" in splits and options.test_fraction:
        raise DatasetError(f"test-fraction: '{repo}' has its own test split; set test-fraction = 0")
    if "test" not in splits and not options.test_fraction:
        raise DatasetError(
            f"test-fraction: '{repo}' has no 'test' split (its splits are {list(splits)}); set test-fraction "
            "(e.g. 0.2) to hold out a seeded, stratified part of train"
        )
    train_x, train_y = _decode_split(train, image, label, classes, options, f"{repo}:train")
    if "test" in splits:
        test_x, test_y = _decode_split(splits["test"], image, label, classes, options, f"{repo}:test")
        if test_x.shape[1:] != train_x.shape[1:]:
            raise DatasetError(
                f"data-dir: '{repo}' train images are {train_x.shape[1:]} but test images {test_x.shape[1:]}; set image-size"
            )
        return train_x, train_y, test_x, test_y, classes
    train_idx, test_idx = stratified_split(train_y, options.test_fraction, options.seed)
    return train_x[train_idx], train_y[train_idx], train_x[test_idx], train_y[test_idx], classes


def fingerprint(splits: DatasetDict) -> str:
    """What identifies the loaded splits' content (HF's own fingerprints), for the array cache."""
    return "|".join(f"{name}:{split._fingerprint}" for name, split in sorted(splits.items()))  # noqa: SLF001
