"""Real bitstreams: exact roundtrips, overhead vs. the ideal, and clear errors for bad input."""

import numpy as np
import pytest

from jaxcomp.coding import (
    BitstreamError,
    ChecksumError,
    CodingError,
    ModelMismatchError,
    TruncatedError,
    UnsupportedError,
    decode_categorical,
    encode_categorical,
    ideal_bits,
    information_content,
    pack,
    peek,
    unpack,
)


def test_categorical_roundtrip_is_exact_and_near_ideal():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20000, 25)) * 3
    pmfs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    symbols = np.array([rng.choice(25, p=p) for p in pmfs], np.int32)
    words = encode_categorical(symbols, pmfs.astype(np.float32))
    np.testing.assert_array_equal(decode_categorical(words, pmfs.astype(np.float32)), symbols)
    ideal = ideal_bits(symbols, pmfs)
    assert ideal <= 32 * len(words) <= ideal * 1.001 + 64


def test_symbols_of_zero_float_probability_cost_the_coders_24_bits_not_infinity():
    """A symbol the float model gives probability 0 is still coded (constriction's fixed-point model
    gives it 2^-24): the reported cost is those 24 bits, finite, and the stream's length agrees."""
    n = 400
    pmfs = np.zeros((n, 5), np.float32)
    pmfs[:, 0] = 1.0
    symbols = np.full(n, 3, np.int32)
    words = encode_categorical(symbols, pmfs)
    np.testing.assert_array_equal(decode_categorical(words, pmfs), symbols)
    np.testing.assert_array_equal(information_content(symbols, pmfs), 24.0)
    assert ideal_bits(symbols, pmfs) == 24.0 * n
    assert abs(32 * len(words) - 24 * n) <= 64
    # above the floor nothing changes: -log2 p
    np.testing.assert_allclose(information_content(np.array([0, 1]), np.array([[0.5, 0.5], [0.75, 0.25]])), [1.0, 2.0])
    # PMFs that do not sum to 1 (the coder normalises them) cost what their normalised form does
    np.testing.assert_allclose(information_content(np.array([0, 1]), np.array([[2.0, 2.0], [3.0, 1.0]])), [1.0, 2.0])


def test_coder_refuses_bad_symbols_and_pmfs():
    pmfs = np.full((3, 4), 0.25, np.float32)
    with pytest.raises(CodingError, match=r"\[0, 4\)"):
        encode_categorical(np.array([0, 4, 1]), pmfs)
    with pytest.raises(CodingError, match="finite"):
        encode_categorical(np.array([0, 1, 1]), np.where(np.eye(3, 4) > 0, np.nan, 0.25).astype(np.float32))
    with pytest.raises(CodingError, match="3 symbols but 2"):
        encode_categorical(np.array([0, 1, 1]), pmfs[:2])
    # checked before the int32 cast: 2**32 is not symbol 0, 1.7 is not symbol 1
    from jaxcomp.coding import encode_uniform, encode_windowed

    with pytest.raises(CodingError, match=r"\[0, 4\)"):
        encode_categorical(np.array([2**32, 1, 0]), pmfs)
    with pytest.raises(CodingError, match=r"\[0, 5\)"):
        encode_uniform(np.array([2**32 + 2]), 5)
    for bad in (lambda s: encode_uniform(s, 5), lambda s: encode_categorical(s, pmfs),
                lambda s: encode_windowed(s, pmfs, np.zeros(3, int), 8), lambda s: ideal_bits(s, pmfs)):
        with pytest.raises(CodingError, match="integers"):
            bad(np.array([1.7, 2.2, 0.0]))
    # a PMF row of zeros (nothing to normalise) is refused, not coded by constriction's error or NaN bits
    zero_row = pmfs.copy()
    zero_row[1] = 0
    for f in (encode_categorical, ideal_bits):
        with pytest.raises(CodingError, match="rows \\[1\\] are all zero"):
            f(np.array([0, 1, 1]), zero_row)


def test_coder_refuses_bad_levels_counts_words_and_window_starts():
    """levels < 2 crashed inside constriction with a Rust panic (not an Exception); decode_uniform
    gave symbols for any count or level number; floats were truncated. Now each is a CodingError, and
    a decode that leaves words over (another count, other levels or models) is one too."""
    from jaxcomp.coding import decode_uniform, decode_windowed, encode_uniform, encode_windowed

    symbols = np.array([0, 1, 2, 1, 2, 2, 0, 1])
    words = encode_uniform(symbols, 3)
    np.testing.assert_array_equal(decode_uniform(words, 8, 3), symbols)
    np.testing.assert_array_equal(decode_uniform(list(words), np.int64(8), np.int32(3)), symbols)
    for levels in (1, 0, True, 2.0, None, 2**24 + 1, 2**32):  # past 2**24 constriction panicked too
        with pytest.raises(CodingError, match=r"levels must be an integer in \[2, 2\*\*24\]"):
            encode_uniform(np.zeros(2, int), levels)
        with pytest.raises(CodingError, match=r"levels must be an integer in \[2, 2\*\*24\]"):
            decode_uniform(words, 8, levels)
    assert decode_uniform(encode_uniform([2**24 - 1], 2**24), 1, 2**24)[0] == 2**24 - 1  # the largest
    for count in (-1, True, 8.0):
        with pytest.raises(CodingError, match="count must be an integer"):
            decode_uniform(words, count, 3)
    for count, levels in ((7, 3), (8, 5)):  # fewer symbols, or another alphabet: words left over
        with pytest.raises(CodingError, match="holds more than was decoded"):
            decode_uniform(words, count, levels)
    with pytest.raises(CodingError, match="uint32"):
        decode_uniform(words.astype(np.float64), 8, 3)
    with pytest.raises(CodingError, match=r"\[0, 2\*\*32\)"):
        decode_uniform(np.array([-1, 5]), 8, 3)
    pmfs = np.full((3, 3), 1 / 3, np.float32)  # windows of 2 levels + escape
    lo = np.array([0, 2, 4])
    stream = encode_windowed(np.array([1, 2, 7]), pmfs, lo, 8)
    np.testing.assert_array_equal(decode_windowed(stream, pmfs, lo, 8), [1, 2, 7])
    with pytest.raises(CodingError, match=r"levels must be an integer in \[2"):
        encode_windowed(np.array([0, 0, 0]), pmfs, lo, 1)
    for one_level in (np.ones((3, 1)), np.ones((3, 0))):  # constriction's message blamed the values
        with pytest.raises(CodingError, match=r"PMFs need L in \[2, 2\*\*24\] levels"):
            encode_categorical(np.zeros(3, int), one_level)
    for f in (lambda lo: encode_windowed(np.array([1, 2, 7]), pmfs, lo, 8),
              lambda lo: decode_windowed(stream, pmfs, lo, 8)):
        with pytest.raises(CodingError, match="window starts must be integers"):
            f(lo + 0.5)
    with pytest.raises(CodingError, match=r"outside \[0, 8\)"):
        decode_windowed(stream, pmfs, lo + 6, 8)  # windows moved past the last level
    with pytest.raises(CodingError, match="holds more than was decoded"):
        decode_categorical(encode_categorical(np.array([0, 1, 2]), pmfs), pmfs[:2])
    with pytest.raises(CodingError, match="holds more than was decoded"):  # inside the alphabet, words over
        decode_windowed(stream, pmfs[:2], lo[:2], 8)
    from jaxcomp.coding import CategoricalStreamDecoder

    with pytest.raises(CodingError, match="uint32"):
        CategoricalStreamDecoder(stream.astype(np.float64))


def test_container_refuses_bad_fingerprints_codecs_and_meta():
    with pytest.raises(ValueError, match="16 bytes"):  # struct padded it with zeros, or cut it, without a word
        pack("l3c", b"abc", {}, [b"x"])
    words = encode_categorical(np.array([0, 1, 2]), np.full((3, 3), 1 / 3))  # uint32 [words]: len counts words
    with pytest.raises(ValueError, match=r"payloads must be bytes, got ndarray .*words.tobytes\(\)"):
        pack("l3c", bytes(16), {}, [words])
    assert unpack(pack("l3c", bytes(16), {}, [words.tobytes()]), "l3c")[1] == [words.tobytes()]
    with pytest.raises(ValueError, match="16 bytes"):
        pack("l3c", bytes(20), {}, [b"x"])
    with pytest.raises(ValueError, match="unknown codec 'foo'"):
        pack("foo", bytes(16), {}, [b"x"])
    with pytest.raises(ValueError, match="JSON data"):
        pack("l3c", bytes(16), {"shape": np.array([2, 3])}, [b"x"])
    blob = pack("l3c", bytes(16), {"a": 1}, [b"x"])
    with pytest.raises(ValueError, match="unknown codec 'foo'"):
        unpack(blob, "foo")
    with pytest.raises(TypeError, match="16-byte fingerprint"):
        unpack(blob, "l3c", bytes(16).hex())
    assert unpack(blob, "l3c", bytes(16)) == ({"a": 1}, [b"x"])
    with pytest.raises(BitstreamError, match=r"metadata is not an object \(a list\)"):  # was an AttributeError
        unpack(pack("l3c", bytes(16), [1, 2], [b"x"]), "l3c")


def test_container_refuses_more_payloads_than_its_count_field_holds():
    from jaxcomp.coding import MAX_PAYLOADS

    assert MAX_PAYLOADS == 0xFFFF
    blob = pack("l3c", bytes(16), {}, [b"x"] * MAX_PAYLOADS)
    assert len(unpack(blob, "l3c", bytes(16))[1]) == MAX_PAYLOADS
    with pytest.raises(ValueError, match="at most 65535 payloads, got 65536"):
        pack("l3c", bytes(16), {}, [b"x"] * (MAX_PAYLOADS + 1))


def test_container_detects_every_kind_of_damage():
    model = bytes(range(16))
    data = pack("l3c", model, {"height": 5}, [b"abcd", b"", b"0123456789ab"])
    meta, payloads = unpack(data, "l3c", model)
    assert meta == {"height": 5} and payloads == [b"abcd", b"", b"0123456789ab"]
    for view in (memoryview(data), bytearray(data)):  # any bytes-like stream, e.g. an mmap'd file
        assert unpack(view, "l3c", model) == (meta, payloads) and peek(view) == ("l3c", model)
    with pytest.raises(TypeError, match="a bitstream is bytes .* not str"):
        unpack(data.decode("latin-1"), "l3c", model)
    with pytest.raises(TruncatedError):
        unpack(data[:-3], "l3c", model)
    with pytest.raises(TruncatedError):
        unpack(data[:10], "l3c", model)
    with pytest.raises(BitstreamError, match="trailing"):
        unpack(data + b"x", "l3c", model)
    for pos in (40, len(data) - 6):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        with pytest.raises(BitstreamError):
            unpack(bytes(flipped), "l3c", model)
    with pytest.raises(ModelMismatchError, match="another model"):
        unpack(data, "l3c", bytes(16))
    with pytest.raises(UnsupportedError, match="codec"):
        unpack(data, "cpm", model)
    with pytest.raises(BitstreamError, match="not a jaxcomp bitstream"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(40), "l3c", model)
    bad_version = bytearray(data)
    bad_version[4] = 99
    with pytest.raises(UnsupportedError, match="version 99"):
        unpack(bytes(bad_version), "l3c", model)
    payload_flip = bytearray(data)
    payload_flip[-8] ^= 1
    with pytest.raises(ChecksumError):
        unpack(bytes(payload_flip), "l3c", model)


def test_windowed_code_roundtrips_escapes_and_costs_what_it_says():
    from jaxcomp.coding import decode_windowed, encode_windowed, ideal_bits_windowed

    rng = np.random.default_rng(2)
    n, levels, window = 5000, 256, 16
    lo = rng.integers(0, levels - window + 1, n)
    pmfs = rng.dirichlet(np.ones(window + 1), n).astype(np.float32)
    symbols = np.clip(lo + rng.integers(-8, window + 8, n), 0, levels - 1)  # about half escape
    assert ((symbols < lo) | (symbols >= lo + window)).mean() > 0.2
    words = encode_windowed(symbols, pmfs, lo, levels)
    np.testing.assert_array_equal(decode_windowed(words, pmfs, lo, levels), symbols)
    ideal = ideal_bits_windowed(symbols, pmfs, lo, levels).sum()
    assert ideal <= 32 * len(words) <= ideal * 1.001 + 64
    with pytest.raises(CodingError, match="window starts"):
        encode_windowed(symbols, pmfs, lo[:-1], levels)
    with pytest.raises(CodingError, match="window starts"):
        decode_windowed(words, pmfs, lo[:-1], levels)
