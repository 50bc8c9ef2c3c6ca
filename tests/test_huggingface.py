"""``hf:<name>`` datasets: column detection, decoding and caching on in-memory data, the offline error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from flsplit.data import DataOptions, DatasetError, DatasetNotFoundError, load_dataset
from flsplit.data.errors import CorruptFileError
from flsplit.data.huggingface import detect_columns, load_hf, read_hf
from flsplit.data.imagefolder import ImageOptions


def _split(n: int, seed: int, label_feature: object = None, size: int = 12) -> Dataset:
    rng = np.random.default_rng(seed)
    images = [PILImage.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [i % 3 for i in range(n)]
    feature = label_feature or ClassLabel(names=["cat", "dog", "frog"])
    return Dataset.from_dict({"img": images, "label": labels, "id": list(range(n))}, features=Features({"img": Image(), "label": feature, "id": Value("int64")}))


def test_columns_are_detected_from_the_image_and_class_label_features() -> None:
    # Prepare
    data = _split(6, 0)
    # Execute / Assert
    assert detect_columns(data) == ("img", "label")
    assert detect_columns(data, label_column="id") == ("img", "id")


def test_a_missing_named_column_names_the_key_and_the_columns() -> None:
    with pytest.raises(DatasetError, match=r"image-column: no column 'image'.*\['img', 'label', 'id'\]"):
        detect_columns(_split(3, 0), image_column="image")


def test_without_an_image_feature_the_error_names_image_column() -> None:
    data = Dataset.from_dict({"pixels": [[0, 1]], "label": [0]})
    with pytest.raises(DatasetError, match="image-column"):
        detect_columns(data)


def test_train_and_test_decode_to_arrays_with_the_class_label_names() -> None:
    # Prepare
    splits = DatasetDict({"train": _split(9, 1), "test": _split(6, 2)})
    # Execute
    train_x, train_y, test_x, test_y, classes = read_hf(splits, "me/pets", ImageOptions())
    # Assert
    assert train_x.shape == (9, 12, 12, 3) and test_x.shape == (6, 12, 12, 3)
    assert classes == ["cat", "dog", "frog"] and train_y.tolist() == [0, 1, 2] * 3
    assert np.array_equal(train_x[4], np.asarray(splits["train"][4]["img"]))


def test_plain_integer_labels_and_a_held_out_test_fraction() -> None:
    # Prepare: no ClassLabel, no test split
    splits = DatasetDict({"train": _split(30, 3, label_feature=Value("int64"))})
    # Execute
    train_x, _, test_x, test_y, classes = read_hf(splits, "me/pets", ImageOptions(image_size=8, test_fraction=0.2, seed=0))
    # Assert
    assert classes == ["0", "1", "2"] and len(train_x) == 24 and np.bincount(test_y).tolist() == [2, 2, 2]
    assert test_x.shape[1:] == (8, 8, 3)


def test_a_saved_copy_in_data_dir_loads_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    DatasetDict({"train": _split(9, 1), "test": _split(6, 2)}).save_to_disk(str(tmp_path / "pets"))
    first = load_dataset("hf:me/pets", str(tmp_path / "pets"))

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr("flsplit.data.sources.read_hf", no_decoding)
    # Execute
    second = load_dataset("hf:me/pets", str(tmp_path / "pets"), options=DataOptions())
    # Assert
    assert first.num_classes == 3 and first.classes == ("cat", "dog", "frog") and first.input_shape == (3, 12, 12)
    assert np.array_equal(first.train.images, second.train.images)


def test_a_truncated_saved_copy_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    # Prepare: a saved copy whose train shard was cut short
    saved = tmp_path / "pets"
    DatasetDict({"train": _split(9, 1), "test": _split(6, 2)}).save_to_disk(str(saved))
    shard = next((saved / "train").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:200])
    # Execute
    with pytest.raises(CorruptFileError) as err:
        load_dataset("hf:me/pets", str(saved))
    # Assert
    assert f"'{saved}' is truncated or corrupt" in str(err.value) and "save_to_disk" in str(err.value)


def test_offline_the_error_names_the_dataset_and_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: what HF_HUB_OFFLINE=1 sets (this machine has no route to the Hub either)
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # Execute / Assert
    with pytest.raises(DatasetNotFoundError) as err:
        load_hf("nobody/no-such-dataset-16")
    assert "'nobody/no-such-dataset-16'" in str(err.value) and "data-dir" in str(err.value)
