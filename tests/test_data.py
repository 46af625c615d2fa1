"""Tests of slimkit.data: splits, normalisation and every loader, good files and broken ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimkit.data import LOADERS, Dataset, load_data
from slimkit.data.digits import digits
from slimkit.errors import SlimkitError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGES, LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def shared(name: str) -> Path:
    """A folder of the shared data, or skip the test when this checkout has none."""
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent (tests need ../shared/data/{name})")
    return folder


# --- digits: splits and normalisation -------------------------------------------------------


def _raw_rows(split_x: torch.Tensor, data: Dataset) -> np.ndarray:
    """Undo the standardisation: the split's raw pixel values, one flat row per image."""
    x = split_x.numpy() * np.float32(data.std[0]) + np.float32(data.mean[0])
    return x.reshape(len(x), -1)


def test_digits_splits_sum_to_all_examples() -> None:
    data = load_data("digits", seed=0)
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 1797
    assert sizes[2] == pytest.approx(0.2 * 1797, abs=1)  # test_fraction of all
    assert sizes[1] == pytest.approx(0.1 * (sizes[0] + sizes[1]), abs=1)  # val_fraction of train
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10


def test_digits_splits_are_disjoint_by_index() -> None:
    data = load_data("digits", seed=3)
    full = digits().train[0].reshape(1797, -1)
    index = {}
    for i, row in enumerate(full.astype(np.int8)):
        index.setdefault(row.tobytes(), []).append(i)
    used: list[int] = []
    for split in (data.train, data.val, data.test):
        for key in (r.tobytes() for r in np.rint(_raw_rows(split.x, data)).astype(np.int8)):
            used.append(index[key].pop())  # each raw image is used by exactly one split
    assert sorted(used) == list(range(1797))


def test_digits_splits_are_deterministic_per_seed() -> None:
    a, b, c = load_data("digits", seed=7), load_data("digits", seed=7), load_data("digits", seed=8)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).x, getattr(b, name).x)
        assert torch.equal(getattr(a, name).y, getattr(b, name).y)
    assert not torch.equal(a.test.y, c.test.y)
    assert not torch.equal(a.train.x[:50], c.train.x[:50])


def test_normalisation_uses_train_statistics_only() -> None:
    data = load_data("digits", seed=0)
    x = data.train.x
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std(unbiased=False).item() - 1.0) < 1e-4
    raw_train = _raw_rows(x, data)
    # the undone values are the raw pixels (integers 0..16), so the stored stats are the real ones
    assert np.allclose(raw_train, np.rint(raw_train), atol=1e-3)
    raw_train = np.rint(raw_train)
    assert data.mean[0] == pytest.approx(raw_train.mean(), rel=1e-5)
    assert data.std[0] == pytest.approx(raw_train.std(), rel=1e-5)
    full = digits().train[0]
    assert data.mean[0] != pytest.approx(full.mean(), rel=1e-6)  # not the statistics of all data
    assert abs(data.val.x.mean().item()) > 1e-6  # held-out splits are not re-centred


# --- MNIST and Fashion-MNIST from the shared folder -----------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shared_idx_data(name: str) -> None:
    data = load_data(name, shared(name))
    assert data.input_shape == (1, 28, 28)
    assert data.num_classes == 10 and len(data.class_names) == 10
    assert len(data.test) == 10_000
    assert len(data.train) + len(data.val) == 60_000
    assert data.task()["n"] == 10_000
    assert set(data.test.y.unique().tolist()) == set(range(10))
    assert 0.0 < data.mean[0] < 1.0  # computed on [0, 1] pixels
    if name == "fashion-mnist":
        assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_mnist_from_the_parent_data_folder() -> None:
    raw = LOADERS.get("mnist")(shared("mnist").parent)
    assert raw.test is not None and raw.test[0].shape == (10_000, 1, 28, 28)
    assert raw.train[0].dtype == np.float32 and raw.train[0].max() == 1.0
    assert raw.train[1].dtype == np.int64


# --- IDX files written to tmp_path ----------------------------------------------------------


def _idx(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    """Four small valid IDX files (4x4 images, labels 0..9) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for images, labels, n in ((IMAGES, LABELS, n_train), (TEST_IMAGES, TEST_LABELS, n_test)):
        contents = {
            images: _idx(2051, rng.integers(0, 256, (n, 4, 4))),
            labels: _idx(2049, np.arange(n) % 10),
        }
        for file, data in contents.items():
            if gz:
                (folder / file).write_bytes(gzip.compress(data))
            else:
                (folder / file.removesuffix(".gz")).write_bytes(data)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_small_files(tmp_path: Path, gz: bool) -> None:
    raw = LOADERS.get("mnist")(write_idx(tmp_path, gz=gz))
    x, y = raw.train
    assert x.shape == (20, 1, 4, 4) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert y.tolist() == [i % 10 for i in range(20)]
    assert raw.test is not None and raw.test[0].shape == (10, 1, 4, 4)
    assert len(load_data("mnist", tmp_path).test) == 10  # t10k is the official test split


def test_idx_bad_magic(tmp_path: Path) -> None:
    write_idx(tmp_path)
    (tmp_path / IMAGES).write_bytes(gzip.compress(_idx(2049, np.zeros((20, 4, 4)))))
    with pytest.raises(SlimkitError, match=r"train-images-idx3-ubyte\.gz: bad magic number 2049"):
        load_data("mnist", tmp_path)


def test_idx_truncated_payload(tmp_path: Path) -> None:
    write_idx(tmp_path)
    data = _idx(2051, np.zeros((20, 4, 4)))
    (tmp_path / TEST_IMAGES).write_bytes(gzip.compress(data[:-7]))
    with pytest.raises(SlimkitError, match=r"t10k-images-idx3-ubyte\.gz: truncated"):
        load_data("mnist", tmp_path)


def test_idx_truncated_header(tmp_path: Path) -> None:
    write_idx(tmp_path)
    (tmp_path / LABELS).write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(SlimkitError, match=r"train-labels-idx1-ubyte\.gz: truncated"):
        load_data("mnist", tmp_path)


@pytest.mark.parametrize("damage", ["not gzip", "cut stream"])
def test_idx_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    write_idx(tmp_path)
    path = tmp_path / LABELS
    data = b"this is not gzip data" if damage == "not gzip" else path.read_bytes()[:-12]
    path.write_bytes(data)
    with pytest.raises(SlimkitError, match=r"train-labels-idx1-ubyte\.gz: corrupt gzip"):
        load_data("mnist", tmp_path)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    write_idx(tmp_path)
    (tmp_path / LABELS).write_bytes(gzip.compress(_idx(2049, np.zeros(19))))
    with pytest.raises(SlimkitError, match=r"20 images but train-labels-idx1-ubyte\.gz holds 19"):
        load_data("mnist", tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    write_idx(tmp_path)
    (tmp_path / TEST_LABELS).write_bytes(gzip.compress(_idx(2049, np.full(10, 12))))
    with pytest.raises(SlimkitError, match=r"t10k-labels-idx1-ubyte\.gz: label 12 out of range"):
        load_data("fashion-mnist", tmp_path)


def test_idx_missing_file(tmp_path: Path) -> None:
    write_idx(tmp_path)
    (tmp_path / TEST_LABELS).unlink()
    with pytest.raises(SlimkitError, match=r"lacks t10k-labels-idx1-ubyte\.gz \(gzipped or not"):
        load_data("mnist", tmp_path)


def test_idx_missing_folder_and_data_dir(tmp_path: Path) -> None:
    with pytest.raises(SlimkitError, match=r"does not exist"):
        load_data("mnist", tmp_path / "nowhere")
    with pytest.raises(SlimkitError, match=r"needs --data-dir.*train-images-idx3-ubyte\.gz"):
        load_data("fashion-mnist")
    with pytest.raises(SlimkitError, match=r"none of the expected IDX files"):
        load_data("mnist", tmp_path)


# --- CSV ------------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_string_labels(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * 0.5},{['dog', 'cat', 'bird'][i % 3]}\n" for i in range(30))
    path = write_csv(tmp_path / "t.csv", "a,b,species\n" + rows)
    raw = LOADERS.get("csv")(path, label="species")
    x, y = raw.train
    assert x.shape == (30, 2) and x.dtype == np.float32 and raw.test is None
    assert raw.class_names == ["bird", "cat", "dog"] and raw.num_classes == 3
    assert y[:3].tolist() == [2, 1, 0]  # dog, cat, bird
    data = load_data("csv", tmp_path, label="species")  # a folder with one .csv works too
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert data.input_shape == (2,) and len(data.mean) == 2


def test_csv_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = "".join(f"{i},{[2, 10, 9][i % 3]}\n" for i in range(9))
    raw = LOADERS.get("csv")(write_csv(tmp_path / "t.csv", "x,label\n" + rows))
    assert raw.class_names == ["2", "9", "10"]
    assert raw.train[1][:3].tolist() == [0, 2, 1]


def test_csv_numeric_label_spellings_are_one_class_named_as_first_written(tmp_path: Path) -> None:
    rows = "".join(f"{i},{['1', '2', '1.0'][i % 3]}\n" for i in range(9))
    raw = LOADERS.get("csv")(write_csv(tmp_path / "t.csv", "x,label\n" + rows))
    assert raw.class_names == ["1", "2"]


def test_csv_missing_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b,target\n1,2,x\n3,4,y\n")
    with pytest.raises(
        SlimkitError, match=r"no label column 'label'; columns present: a, b, target"
    ):
        load_data("csv", path)


def test_csv_non_numeric_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,colour,label\n1,red,0\n2,blue,1\n")
    with pytest.raises(SlimkitError, match=r"column 'colour' is not numeric.*one-hot encode"):
        load_data("csv", path)


def test_csv_missing_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b,label\n1,2,0\n3,,1\n")
    with pytest.raises(SlimkitError, match=r"column 'b' has a missing value"):
        load_data("csv", path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("a,label\n", "no data rows"),
        ("a,label\n1,x\n2,x\n", "holds 1 class; need at least 2"),
        ("a,label\n1,x\n2\n", "data row 2 has 1 fields"),
    ],
)
def test_csv_bad_files(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SlimkitError, match=problem):
        load_data("csv", write_csv(tmp_path / "t.csv", text))


def test_csv_path_problems(tmp_path: Path) -> None:
    with pytest.raises(SlimkitError, match="does not exist"):
        load_data("csv", tmp_path / "absent.csv")
    write_csv(tmp_path / "one.csv", "a,label\n1,0\n")
    write_csv(tmp_path / "two.csv", "a,label\n1,0\n")
    with pytest.raises(SlimkitError, match=r"exactly one \.csv file \(found: one\.csv, two\.csv\)"):
        load_data("csv", tmp_path)


# --- imagefolder ----------------------------------------------------------------------------


def write_images(root: Path, classes: dict[str, int], mode: str = "RGB", size=(6, 5)) -> Path:
    """``count`` tiny images per class folder; class ``i`` is filled with a distinct colour."""
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            colour = (40 * c + k, 200 - 40 * c, 10 * k) if mode == "RGB" else 50 * c + k
            Image.new(mode, size, colour).save(root / name / f"{k}.png")
    return root


def test_imagefolder_flat_layout(tmp_path: Path) -> None:
    write_images(tmp_path, {"cat": 3, "dog": 4})
    raw = LOADERS.get("imagefolder")(tmp_path)
    x, y = raw.train
    assert x.shape == (7, 3, 5, 6) and x.dtype == np.float32  # Pillow sizes are (w, h)
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 1] and raw.class_names == ["cat", "dog"]
    assert raw.test is None
    assert x[0, :, 0, 0] == pytest.approx(np.array([0, 200, 0]) / 255.0)
    data = load_data("imagefolder", tmp_path)
    assert len(data.mean) == 3  # statistics per channel


def test_imagefolder_train_test_layout_and_resize(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 4, "b": 4}, mode="L")
    write_images(tmp_path / "test", {"a": 2, "b": 2}, mode="L", size=(9, 9))
    raw = LOADERS.get("imagefolder")(tmp_path)
    assert raw.train[0].shape == (8, 1, 5, 6)  # first image's size, grey because mode L
    assert raw.test is not None and raw.test[0].shape == (4, 1, 5, 6)  # test resized to match
    square = LOADERS.get("imagefolder")(tmp_path, size=4, grayscale=False)
    assert square.train[0].shape == (8, 3, 4, 4)
    data = load_data("imagefolder", tmp_path, size=(3, 7))
    assert data.input_shape == (1, 3, 7) and len(data.test) == 4


def test_imagefolder_unreadable_image(tmp_path: Path) -> None:
    write_images(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(SlimkitError, match=r"cannot read image .*broken\.png"):
        load_data("imagefolder", tmp_path)


def test_imagefolder_class_mismatch(tmp_path: Path) -> None:
    write_images(tmp_path / "train", {"a": 2, "b": 2})
    write_images(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(SlimkitError, match=r"only in train: b; only in test: c"):
        load_data("imagefolder", tmp_path)


def test_imagefolder_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(SlimkitError, match="does not exist"):
        load_data("imagefolder", tmp_path / "absent")
    with pytest.raises(SlimkitError, match="no class subfolders"):
        load_data("imagefolder", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlimkitError, match=r"class folder .*empty holds no images"):
        load_data("imagefolder", tmp_path)
    write_images(tmp_path / "x", {"a": 1})
    with pytest.raises(SlimkitError, match="one class folder"):
        load_data("imagefolder", tmp_path / "x")
    write_images(tmp_path / "x", {"a": 1, "b": 1})
    with pytest.raises(SlimkitError, match="size must be"):
        LOADERS.get("imagefolder")(tmp_path / "x", size=(0, 3))


# --- SST-2 ----------------------------------------------------------------------------------


def write_tsv(path: Path, rows: list[tuple[str, int]], header: str = "sentence\tlabel") -> Path:
    lines = [header] + [f"{text}\t{label}" for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_sst2_small_files(tmp_path: Path) -> None:
    rows = [(f'a "quoted" film number {i} ', i % 2) for i in range(20)]
    write_tsv(tmp_path / "train.tsv", rows)
    write_tsv(tmp_path / "dev.tsv", rows[:6])
    raw = LOADERS.get("sst2")(tmp_path)
    assert raw.train[0][0] == 'a "quoted" film number 0' and raw.train[1].dtype == np.int64
    assert raw.normalize is False and raw.class_names == ["negative", "positive"]
    data = load_data("sst2", tmp_path)
    assert isinstance(data.train.x, list) and len(data.test) == 6 and data.num_classes == 2
    assert len(data.train) + len(data.val) == 20


def test_sst2_problems(tmp_path: Path) -> None:
    with pytest.raises(SlimkitError, match=r"neither train_full\.tsv nor train\.tsv"):
        load_data("sst2", tmp_path)
    write_tsv(tmp_path / "train_full.tsv", [("good", 1), ("bad", 0), ("fine", 1), ("meh", 0)])
    with pytest.raises(SlimkitError, match=r"lacks the test file dev\.tsv"):
        load_data("sst2", tmp_path)
    write_tsv(tmp_path / "dev.tsv", [("good", 1)], header="index\tsentence")
    with pytest.raises(SlimkitError, match=r"dev\.tsv: bad header"):
        load_data("sst2", tmp_path)
    write_tsv(tmp_path / "dev.tsv", [("good", 1), ("bad", 7)])
    with pytest.raises(SlimkitError, match=r"dev\.tsv: line 3 is malformed"):
        load_data("sst2", tmp_path)


def test_sst2_shared_files() -> None:
    folder = shared("sst2")
    data = load_data("sst2", folder)
    assert len(data.test) == 872 and len(data.train) + len(data.val) == 67_349
    labelled = LOADERS.get("sst2")(folder, test_file="test-labeled.tsv")  # CRLF line ends
    assert labelled.test is not None and len(labelled.test[0]) == 1821
    assert not any(s.endswith("\r") for s in labelled.test[0])


# --- names and options ----------------------------------------------------------------------


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(SlimkitError, match=r"unknown data set 'nope'; known: csv, digits, fashion"):
        load_data("nope")


def test_unknown_option_is_a_slimkit_error() -> None:
    with pytest.raises(SlimkitError, match=r"'digits' has no option colour"):
        load_data("digits", colour=True)
    with pytest.raises(SlimkitError, match=r"drop --data-dir"):
        load_data("digits", "somewhere")
