"""GLUE SST-2 sentiment sentences from its TSV files (``sentence<TAB>label`` with a header row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimkit.data.dataset import LOADERS, RawData
from slimkit.errors import SlimkitError

TRAIN_FILES = ("train_full.tsv", "train.tsv")  # the first one present is used
CLASS_NAMES = ["negative", "positive"]


@LOADERS.register("sst2")
def sst2(data_dir: Path | None, test_file: str = "dev.tsv") -> RawData:
    """SST-2 as text: train from ``train_full.tsv`` (else ``train.tsv``), test from ``dev.tsv``.

    GLUE's own ``test.tsv`` has no labels, hence the labelled dev set as the default test split.
    The inputs are lists of strings (``normalize=False``); tokenize them before training.

    Args:
        data_dir: Folder holding the TSV files.
        test_file: Name of the TSV file used as the test split (e.g. ``test-labeled.tsv``).

    Example:
        >>> raw = sst2(Path("../shared/data/sst2"))  # doctest: +SKIP
        >>> len(raw.test[0]), raw.class_names  # doctest: +SKIP
        (872, ['negative', 'positive'])
    """
    if data_dir is None:
        raise SlimkitError(
            f"the sst2 data set needs --data-dir: a folder holding {TRAIN_FILES[0]} and dev.tsv"
        )
    if not data_dir.is_dir():
        raise SlimkitError(f"sst2: folder {data_dir} does not exist")
    train_path = next((data_dir / n for n in TRAIN_FILES if (data_dir / n).is_file()), None)
    if train_path is None:
        raise SlimkitError(f"sst2: {data_dir} holds neither {' nor '.join(TRAIN_FILES)}")
    test_path = data_dir / test_file
    if not test_path.is_file():
        raise SlimkitError(
            f"sst2: {data_dir} lacks the test file {test_file}; pass test_file=NAME to pick another"
        )
    return RawData(
        train=read_tsv(train_path), test=read_tsv(test_path), num_classes=2,
        class_names=list(CLASS_NAMES), normalize=False,
    )  # fmt: skip


def read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    """Sentences and 0/1 labels from one SST-2 TSV; the header names the two columns.

    Example:
        >>> sentences, labels = read_tsv(Path("../shared/data/sst2/dev.tsv"))  # doctest: +SKIP
        >>> len(sentences), labels[:3].tolist()  # doctest: +SKIP
        (872, [1, 0, 1])
    """
    # Split on tabs and newlines only: SST-2 sentences hold quotes that csv would interpret.
    try:
        with path.open(encoding="utf-8", newline="") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as exc:
        raise SlimkitError(f"{path}: not UTF-8 text ({exc})") from None
    columns = lines[0].split("\t") if lines else []
    if "sentence" not in columns or "label" not in columns:
        raise SlimkitError(
            f"{path}: bad header {lines[0] if lines else ''!r}; expected 'sentence<TAB>label' "
            "(GLUE's unlabelled test.tsv cannot be used as a test split)"
        )
    text_at, label_at = columns.index("sentence"), columns.index("label")
    sentences: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # a trailing blank line is common and carries nothing
        fields = line.split("\t")
        if len(fields) != len(columns) or fields[label_at].strip() not in ("0", "1"):
            raise SlimkitError(
                f"{path}: line {number} is malformed: expected {len(columns)} tab-separated "
                f"fields with label 0 or 1, got {line[:80]!r}"
            )
        sentences.append(fields[text_at].strip())
        labels.append(int(fields[label_at]))
    if not sentences:
        raise SlimkitError(f"{path}: no data rows after the header")
    return sentences, np.array(labels, dtype=np.int64)
