"""The ``imagefolder`` dataset: any tree or archive, any class count, grayscale or RGB, any size."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from flsplit.config import ConfigError, parse_run_config
from flsplit.data import DataOptions, DatasetError, PartitionLoader, describe_dataset, load_dataset, sources
from flsplit.data.augment import augment
from tests.conftest import write_image_folder


def test_grayscale_28x28_ten_class_folder_loads_as_one_channel_with_sorted_class_names(gray_digits: Path) -> None:
    # Execute
    data = load_dataset("imagefolder", str(gray_digits))
    # Assert
    assert data.train.images.shape == (60, 28, 28, 1) and data.test.images.shape == (30, 28, 28, 1)
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert data.classes == tuple(f"digit{k}" for k in range(10))
    assert len(data.mean) == len(data.std) == 1
    first = np.asarray(Image.open(gray_digits / "train" / "digit0" / "0000.png"))
    assert np.array_equal(data.train.images[0, :, :, 0], first)


def test_tar_and_zip_archives_load_the_same_pixels_as_the_tree(gray_digits: Path, tmp_path: Path) -> None:
    # Prepare
    with tarfile.open(tmp_path / "digits.tar.gz", "w:gz") as tar:
        tar.add(gray_digits, arcname="digits")
    with zipfile.ZipFile(tmp_path / "digits.zip", "w") as archive:
        for path in sorted(gray_digits.rglob("*")):
            archive.write(path, path.relative_to(gray_digits.parent))
    # Execute
    tree = load_dataset("imagefolder", str(gray_digits))
    from_tar = load_dataset("imagefolder", str(tmp_path / "digits.tar.gz"))
    from_zip = load_dataset("imagefolder", str(tmp_path / "digits.zip"))
    # Assert
    for other in (from_tar, from_zip):
        assert np.array_equal(tree.train.images, other.train.images) and np.array_equal(tree.test.labels, other.test.labels)
        assert other.classes == tree.classes


def test_image_size_resizes_the_shorter_side_and_crops_the_centre(tmp_path: Path) -> None:
    # Prepare: 20x40 images, left quarter black, middle white, right quarter black
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 10:30] = 255
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "wide" / split / name).mkdir(parents=True)
            Image.fromarray(pixels).save(tmp_path / "wide" / split / name / "0.png")
    (tmp_path / "wide" / "train" / "a" / "tall.png").write_bytes((tmp_path / "wide" / "train" / "a" / "0.png").read_bytes())
    Image.fromarray(np.full((30, 10, 3), 255, np.uint8)).save(tmp_path / "wide" / "train" / "a" / "tall.png")
    # Execute
    data = load_dataset("imagefolder", str(tmp_path / "wide"), options=DataOptions(image_size=10))
    # Assert: 20x40 -> 10x20 -> centre 10x10, which is the white middle
    assert data.train.images.shape == (3, 10, 10, 3) and data.input_shape == (3, 10, 10)
    assert data.train.images.min() > 200


def test_mixed_sizes_without_image_size_name_each_size_a_file_and_the_key(tmp_path: Path) -> None:
    # Prepare
    root = write_image_folder(tmp_path / "mixed", {"train": 10, "test": 10})
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "train" / "digit3" / "big.png")
    # Execute
    with pytest.raises(DatasetError) as err:
        load_dataset("imagefolder", str(root))
    # Assert
    text = str(err.value)
    assert "28x28" in text and "32x32" in text and "big.png" in text and "image-size" in text


def test_corrupt_image_names_the_file(gray_digits: Path) -> None:
    # Prepare
    (gray_digits / "test" / "digit4" / "broken.png").write_bytes(b"not a png at all")
    # Execute / Assert
    with pytest.raises(DatasetError, match=r"cannot read the image '.*digit4/broken\.png'"):
        load_dataset("imagefolder", str(gray_digits))


def test_empty_class_folder_names_the_folder(gray_digits: Path) -> None:
    # Prepare
    (gray_digits / "train" / "digit10").mkdir()
    # Execute / Assert
    with pytest.raises(DatasetError, match=r"class folder '.*train/digit10' holds no images"):
        load_dataset("imagefolder", str(gray_digits))


def test_class_that_only_one_split_has_is_named_with_its_split(gray_digits: Path) -> None:
    # Prepare
    for image in (gray_digits / "test" / "digit7").iterdir():
        image.unlink()
    (gray_digits / "test" / "digit7").rmdir()
    # Execute / Assert
    with pytest.raises(DatasetError, match=r"\['digit7'\] only in '.*train'.*test-fraction"):
        load_dataset("imagefolder", str(gray_digits))


def test_test_fraction_holds_out_a_seeded_stratified_split_when_there_is_no_test_folder(tmp_path: Path) -> None:
    # Prepare
    root = write_image_folder(tmp_path / "only-train", {"train": 100})
    # Execute
    a = load_dataset("imagefolder", str(root), seed=1, options=DataOptions(test_fraction=0.2))
    b = load_dataset("imagefolder", str(root), seed=1, options=DataOptions(test_fraction=0.2))
    c = load_dataset("imagefolder", str(root), seed=2, options=DataOptions(test_fraction=0.2))
    # Assert: 2 of each class's 10 images held out, the same ones for the same seed
    assert len(a.train) == 80 and np.bincount(a.test.labels).tolist() == [2] * 10
    assert np.array_equal(a.test.images, b.test.images) and not np.array_equal(a.test.images, c.test.images)


def test_missing_test_split_without_test_fraction_says_which_key_to_set(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "only-train", {"train": 20})
    with pytest.raises(DatasetError, match="test-fraction"):
        load_dataset("imagefolder", str(root))


def test_grayscale_images_among_rgb_ones_become_rgb(tmp_path: Path) -> None:
    # Prepare
    root = write_image_folder(tmp_path / "rgb", {"train": 10, "test": 10}, mode="RGB")
    Image.fromarray(np.full((28, 28), 77, np.uint8)).save(root / "train" / "digit1" / "gray.png")
    # Execute
    data = load_dataset("imagefolder", str(root))
    # Assert
    gray = data.train.images[data.train.labels == 1][-1]
    assert data.input_shape == (3, 28, 28) and np.all(gray == 77)


def test_second_load_and_the_description_read_the_cache_instead_of_decoding(gray_digits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    first = load_dataset("imagefolder", str(gray_digits))

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "read_image_folder", no_decoding)
    # Execute
    second = load_dataset("imagefolder", str(gray_digits))
    monkeypatch.setattr(sources, "load_dataset", no_decoding)  # the description reads only the metadata
    described = describe_dataset.__wrapped__("imagefolder", str(gray_digits))
    # Assert
    assert np.array_equal(first.train.images, second.train.images) and second.classes == first.classes
    assert described == (10, (1, 28, 28))


def test_config_takes_classes_and_input_shape_from_the_folder(gray_digits: Path) -> None:
    # Execute
    config = parse_run_config({"dataset": "imagefolder", "data-dir": str(gray_digits), "model": "resnet20"})
    # Assert
    assert config.num_classes == 10 and config.input_shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("raw", "key", "text"),
    [
        ({"dataset": "mnist"}, "dataset", "choose one of ['cifar10', 'cifar100', 'synthetic', 'imagefolder'] or 'hf:<name>'"),
        ({"dataset": "hf:"}, "dataset", "choose one of"),
        ({"image-size": -1}, "image-size", "greater than or equal to 0"),
        ({"test-fraction": 1.0}, "test-fraction", "less than 1"),
    ],
)
def test_bad_data_keys_name_the_key_and_the_choices(raw: dict, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw)
    assert f"- {key}:" in str(err.value) and text in str(err.value)


def test_augmentation_pads_by_an_eighth_of_the_image_size() -> None:
    # Prepare: 28x28 images are padded by 3
    x = torch.randn(8, 1, 28, 28)
    padded = F.pad(x, (3, 3, 3, 3))
    # Execute
    out = augment(x, torch.Generator().manual_seed(0))
    # Assert
    assert out.shape == x.shape
    for i in range(8):
        crops = [padded[i, :, dy : dy + 28, dx : dx + 28] for dy in range(7) for dx in range(7)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_grayscale_batches_are_normalised_one_channel_tensors(gray_digits: Path) -> None:
    # Prepare
    data = load_dataset("imagefolder", str(gray_digits))
    loader = PartitionLoader(data, np.arange(60), batch_size=16, seed=0, partition_id=0)
    # Execute
    x, y = loader.batch(0)
    # Assert
    assert x.shape == (16, 1, 28, 28) and y.max() < 10
    assert abs(float(x.mean())) < 0.5
