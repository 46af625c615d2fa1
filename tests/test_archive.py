import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.archive import inspect_slim, load_slim, save_slim
from slimkit.archive.encodings import decode, encode
from slimkit.archive.streams import pack_bits, unpack_bits
from slimkit.errors import SlimkitError
from slimkit.models import build_model, load_model


def round_trip(array: np.ndarray) -> np.ndarray:
    encoded = encode(array)
    streams = {s.role: s for s in encoded.streams}
    return decode(encoded.encoding, encoded.settings, streams, list(array.shape), array.dtype.str)


@st.composite
def tensors(draw):
    """Dense, sparse, clustered and sparse-clustered float32 tensors of random shapes."""
    shape = draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))
    size = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.standard_normal(size).astype(np.float32)
    if draw(st.booleans()):  # weight sharing: few distinct values
        book = rng.standard_normal(draw(st.integers(1, 64))).astype(np.float32)
        values = book[rng.integers(0, book.size, size)]
    if draw(st.booleans()):  # pruning: mostly zeros, with long gaps
        values[rng.random(size) < draw(st.floats(0.5, 1.0))] = 0
    return values.reshape(shape)


@settings(max_examples=150, deadline=None)
@given(tensors())
def test_every_encoding_round_trips_exactly(array):
    assert np.array_equal(round_trip(array), array)


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_packing_round_trip(bits):
    symbols = np.random.default_rng(bits).integers(0, 2**bits, 1001)
    assert np.array_equal(unpack_bits(pack_bits(symbols, bits), bits, symbols.size), symbols)


def test_encoding_choice_follows_content():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(4096).astype(np.float32)
    assert encode(dense).encoding == "dense"
    sparse = rng.standard_normal(40_000).astype(np.float32)
    sparse[rng.random(40_000) < 0.95] = 0  # ~2,000 distinct values: too many for a codebook
    assert encode(sparse).encoding == "sparse"
    shared = np.linspace(-1, 1, 16, dtype=np.float32)[rng.integers(0, 16, 4096)]
    assert encode(shared).encoding == "codebook"
    shared[rng.random(4096) < 0.9] = 0
    assert encode(shared).encoding == "sparse+codebook"


def test_long_gaps_use_fillers():
    """A gap longer than the relative index can express needs filler entries (Han et al.)."""
    array = np.zeros(10_000, dtype=np.float32)
    array[[0, 9_999]] = [1.5, -2.0]
    assert np.array_equal(round_trip(array), array)


def pruned_clustered_lenet():
    model = build_model("lenet300", (1, 28, 28), 10).eval()
    with torch.no_grad():
        for layer in (model[1], model[3], model[5]):
            w = layer.weight
            w[w.abs() < w.abs().quantile(0.9)] = 0
            book = torch.linspace(float(w.min()), float(w.max()), 32)
            nz = w != 0
            w[nz] = book[(w[nz][:, None] - book).abs().argmin(1)]
    return model


def test_model_round_trip_and_size(tmp_path):
    model = pruned_clustered_lenet()
    path = save_slim(model, tmp_path / "m.slim")
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(load_slim(path)(x), model(x))
    assert torch.equal(load_model(path)(x), model(x))  # load_model recognises the archive
    assert path.stat().st_size < 266_610 * 4 / 25  # 10% kept, 5-bit shared values
    table = {row["name"]: row for row in inspect_slim(path)}
    assert table["1.weight"]["encoding"] == "sparse+codebook"
    assert table["1.weight"]["bits_per_weight"] < 6 and table["1.weight"]["bits_per_index"] <= 8


def test_resnet_with_buffers_round_trips(tmp_path):
    model = build_model("resnet20", (1, 16, 16), 10)
    model.train()
    model(torch.randn(4, 1, 16, 16))  # non-trivial BN running statistics
    model.eval()
    loaded = load_slim(save_slim(model, tmp_path / "r.slim"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


@pytest.fixture
def archive(tmp_path):
    return save_slim(pruned_clustered_lenet(), tmp_path / "m.slim")


def test_truncated_archive(archive):
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(SlimkitError, match="truncated"):
        load_slim(archive)


def test_corrupt_archive(archive):
    blob = bytearray(archive.read_bytes())
    blob[-50] ^= 0xFF
    archive.write_bytes(bytes(blob))
    with pytest.raises(SlimkitError, match="corrupt"):
        load_slim(archive)


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.slim"
    path.write_bytes(b"hello world, not an archive")
    with pytest.raises(SlimkitError, match=r"not a \.slim archive"):
        load_slim(path)


def test_newer_version_refused(archive):
    blob = bytearray(archive.read_bytes())
    blob[8:12] = struct.pack("<I", 99)
    archive.write_bytes(bytes(blob))
    with pytest.raises(SlimkitError, match=r"version 99.*upgrade"):
        load_slim(archive)


def test_top_level_load_reads_a_slim_archive(tmp_path):
    import slimkit
    from slimkit.archive import save_slim
    from slimkit.models import build_model

    model = build_model("mlp", (1, 8, 8), 10).eval()
    path = save_slim(model, tmp_path / "m.slim")
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(slimkit.load(path)(x), model(x))


def test_256_shared_values_plus_zero_encode_and_round_trip():
    # 8-bit clustering of a pruned layer: 256 values and the zero do not fit one byte symbol
    rng = np.random.default_rng(0)
    w = rng.choice(np.linspace(-1, 1, 256, dtype=np.float32), size=4096)
    w[rng.random(4096) < 0.5] = 0.0
    np.testing.assert_array_equal(round_trip(w), w)
