"""L3C codec: exact decoding of real photos at any size, estimate vs. real bits, bad input, the shipped model."""

import json
import os
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxcomp.codecs import l3c
from jaxcomp.coding import BitstreamError, ModelMismatchError, TruncatedError
from jaxcomp.data import load_image, sample_image_paths
from jaxcomp.train import jit_init


@pytest.fixture(scope="module")
def codec(l3c_tiny_config, l3c_tiny_params):
    return l3c.L3CCodec(l3c.spec_from_config(l3c_tiny_config.model), l3c_tiny_params, tile=48)


@pytest.fixture(scope="module")
def codec_all_levels(codec):
    return l3c.L3CCodec(codec.spec, codec.params, tile=48, window=0)


@pytest.fixture(scope="module")
def photo():
    return load_image(sample_image_paths()[1])


@pytest.mark.parametrize("windowed", [True, False], ids=["window64", "all_levels"])
def test_exact_roundtrip_of_real_photos_at_odd_sizes(codec, codec_all_levels, photo, windowed):
    codec = codec if windowed else codec_all_levels
    rng = np.random.default_rng(0)
    for h, w in [(48, 48), (61, 37), (1, 1), (5, 90)]:
        y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        image = photo[y:y + h, x:x + w]
        data, ideal = codec.compress(image, return_bits=True)
        out = codec.decompress(data)
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out, image)
        assert len(data) * 8 < 1.02 * ideal + 2000  # header and per-stream flush only
        if h * w >= 48 * 48 and not windowed:
            # PMFs over all levels are exactly the training likelihood's; a window codes
            # improbable levels uniformly instead (cheaper for this untrained model)
            estimate = codec.estimate_bits(image)
            assert abs(ideal - estimate) / estimate < 0.005


def test_the_stream_says_its_window(codec, codec_all_levels, photo):
    image = photo[:48, :48]
    np.testing.assert_array_equal(codec_all_levels.decompress(codec.compress(image)), image)
    np.testing.assert_array_equal(codec.decompress(codec_all_levels.compress(image)), image)
    # a stream from before windows existed has no window key: it coded all levels, and still decodes
    from jaxcomp.coding import pack, unpack

    meta, payloads = unpack(codec_all_levels.compress(image), "l3c", codec.fingerprint)
    assert meta.pop("window") == 0
    np.testing.assert_array_equal(codec.decompress(pack("l3c", codec.fingerprint, meta, payloads)), image)


def test_grayscale_roundtrip(codec, photo):
    gray = photo[:40, :40, 1]
    out = codec.decompress(codec.compress(gray))
    assert out.shape == (40, 40) and out.flags.c_contiguous  # not a view of a 3-channel buffer
    np.testing.assert_array_equal(out, gray)


def test_bad_images_are_refused(codec, photo, monkeypatch):
    with pytest.raises(ValueError, match="uint8"):
        codec.compress(photo[:16, :16].astype(np.uint16))
    with pytest.raises(ValueError, match="RGBA"):
        codec.compress(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        codec.compress(np.zeros((8, 8, 2), np.uint8))
    # nothing is written that the decoder would refuse (a lossless file that never decodes is lost data):
    # sides over 65536, tiles over 16384, more payloads than the container's 16-bit count
    with pytest.raises(ValueError, match="at most 65536 pixels a side"):
        codec.compress(np.zeros((1, (1 << 16) + 1), np.uint8))
    with pytest.raises(ValueError, match="up to 16384"):
        l3c.L3CCodec(codec.spec, codec.params, tile=(1 << 14) + 2**codec.spec.scales)
    import jaxcomp.coding

    monkeypatch.setattr(jaxcomp.coding, "MAX_PAYLOADS", 1)
    with pytest.raises(ValueError, match="4 tiles need more than a stream's 1 payloads"):
        codec.compress(photo[:96, :96])


def test_damaged_or_foreign_bitstreams_give_clear_errors(codec, photo, l3c_tiny_config):
    data = codec.compress(photo[:32, :32])
    with pytest.raises(TruncatedError):
        codec.decompress(data[: len(data) // 2])
    rng = np.random.default_rng(1)
    for _ in range(5):
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(BitstreamError):
            codec.decompress(bytes(flipped))
    spec = l3c.spec_from_config(l3c_tiny_config.model)
    other_params = jit_init(l3c.L3C(spec).init)(jax.random.PRNGKey(1), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    other = l3c.L3CCodec(spec, other_params, tile=48)
    with pytest.raises(ModelMismatchError):
        other.decompress(data)


def test_the_tiling_is_read_from_the_stream(codec, photo):
    bigger_tiles = l3c.L3CCodec(codec.spec, codec.params, tile=64)
    image = photo[:70, :50]
    np.testing.assert_array_equal(codec.decompress(bigger_tiles.compress(image)), image)


def test_a_stream_from_other_numerics_is_refused_before_decoding(codec, photo):
    import copy

    other = copy.copy(codec)
    other.numerics = "cpu/ynn" if codec.numerics != "cpu/ynn" else "cpu/xla"
    with pytest.raises(BitstreamError, match=f"compressed with {other.numerics} numerics"):
        codec.decompress(other.compress(photo[:16, :16]))
    assert codec.numerics == "cpu/xla"  # importing jaxcomp before JAX starts selects XLA's convolutions


@pytest.mark.parametrize("key,value,message", [
    ("blocks", 4, r"unused D1/body/block4/conv1/bias"),  # would code with half the network
    ("features", 48, r"D1/body/block0/conv1/bias: \(32,\) instead of \(48,\)"),  # would fail inside Flax
])
def test_a_model_file_whose_notes_describe_other_layers_is_refused(tmp_path, key, value, message):
    """The shipped parameters beside notes that name another architecture (an edited .json: the
    pair's parameter digest still matches) are refused by name when the codec is loaded."""
    import shutil

    from jaxcomp.codecs.pretrained import DEFAULT_L3C
    from jaxcomp.modelfile import ModelLoadError

    base = os.path.splitext(DEFAULT_L3C)[0]
    shutil.copy(base + ".msgpack", tmp_path / "m.msgpack")
    with open(base + ".json") as f:
        notes = json.load(f)
    notes["config"]["model"][key] = value
    (tmp_path / "m.json").write_text(json.dumps(notes))
    with pytest.raises(ModelLoadError, match="do not fit the architecture its .json describes.*" + message):
        l3c.load_codec(str(tmp_path / "m.msgpack"))


def test_a_model_of_five_scales_loads(l3c_tiny_config, tmp_path):
    """The load-time check of the parameters against the notes traces the model on an image large
    enough for every scale (a fixed 16x16 one made a 5-scale model unloadable)."""
    from jaxcomp.configs import apply_overrides
    from jaxcomp.modelfile import export_params

    config = apply_overrides(l3c_tiny_config, ["model.scales=5"])
    spec = l3c.spec_from_config(config.model)
    shapes = jax.eval_shape(l3c.L3C(spec).init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), np.uint8))["params"]
    export_params(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes), config, str(tmp_path / "m.msgpack"), {})
    assert l3c.load_codec(str(tmp_path / "m.msgpack")).spec.scales == 5


def test_the_shipped_model_codes_a_photo_crop_exactly_and_compactly():
    """The model ``jaxcomp compress`` uses by default (``l3c.load_codec()``: the shipped
    ``jaxcomp/codecs/pretrained/l3c.msgpack``) has the architecture its ``l3c.json`` records,
    and codes a 64x64 crop of a held-out sample photo bit-exactly (decoded by a second codec
    loaded from the file, as another ``jaxcomp decompress`` process would) in under 3.9 bits
    per subpixel, header included. It measures 3.37 (the subsampled RGB pyramid with 4 sub-pixel
    steps, shipped 2026-12-05 21:02, whose default ``top_levels=2`` leaves this tile's 8x8 top
    uniform, ``top_min_side``; 3.43 with both levels coded, ``top_min_side=1``); the model before it
    (``l3c_2026-12-05_1815.msgpack``) 3.42 (3.48), the one before that (``l3c_2026-12-05.msgpack``)
    3.56 with both levels, the bicubic one shipped 2026-12-02 3.97, an untrained model of this
    architecture 11.

    Guards against a wrongly loaded model (parameters of the wrong layers or scales, or the
    earlier model) and against bugs that a trained model exposes and the untrained test model
    hides: the codec's decoders ignoring the coarser scale's features, every log-scale clamped
    to at most -7 instead of at least -7, the scales' order reversed (each a mutant in
    tests/mutants/l3c.toml that this test kills, checked with the model shipped 2026-12-05 21:02).
    """
    from jaxcomp.codecs.pretrained import DEFAULT_L3C

    codec = l3c.load_codec()
    with open(os.path.splitext(DEFAULT_L3C)[0] + ".json") as f:
        recorded = json.load(f)["config"]["model"]
    assert codec.spec == l3c.L3CSpec(**recorded) and codec.spec.representation == "rgb"
    image = load_image(sample_image_paths()[0])[:64, 128:192]
    data = codec.compress(image)
    np.testing.assert_array_equal(l3c.load_codec().decompress(data), image)
    bpsp = len(data) * 8 / image.size
    assert bpsp < 3.9, bpsp
    # its fingerprint, which every stream it wrote carries, is pinned: a change of the model or of
    # what the fingerprint hashes would make those files undecodable
    assert codec.fingerprint.hex() == "882e14332fc5b237516fcc116671e642"


class _Traces:
    """Counts JAX traces (every jit cache miss traces, whether or not a persistent cache then
    serves the compiled code) while the context is open."""

    def __enter__(self):
        self.count = 0
        self._listener = lambda event, duration, **kw: setattr(
            self, "count", self.count + (event == "/jax/core/compile/jaxpr_trace_duration"))
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def test_images_of_one_bucket_compile_once(codec, photo):
    """Two images of different sizes in one tile bucket (sides padded to 32x40 and 28x36, both
    computed at 32x40, the bucket of the 61x37 roundtrip above): the second traces and compiles
    nothing, both decode exactly, and only the image's symbols are coded (the bit maps have its
    padded size, not the bucket's)."""
    assert codec.buckets == (4, 8, 16, 24, 32, 40, 48)
    first, second = photo[:30, 5:42], photo[40:67, 100:134]
    np.testing.assert_array_equal(codec.decompress(codec.compress(first)), first)
    with _Traces() as traces:
        data = codec.compress(second)
        out = codec.decompress(data)
    assert traces.count == 0, f"{traces.count} new traces for an image of a bucket already compiled"
    np.testing.assert_array_equal(out, second)
    maps = codec.bit_maps(second)
    assert maps["x(0) R"].shape == (28, 36) and maps["x(1)"].shape[:2] == (14, 18)


def test_bucket_ladder_and_even_tiles(codec):
    assert l3c.bucket_sides(512, 3) == (8, 16, 32, 64, 128, 256, 320, 384, 448, 512)
    assert codec._tiles(61, 100) == [(0, 0, 32, 36), (0, 36, 32, 36), (0, 72, 32, 28),
                                     (32, 0, 29, 36), (32, 36, 29, 36), (32, 72, 29, 28)]
    assert l3c.L3CCodec(codec.spec, codec.params, tile=48, buckets=None)._tiles(61, 50) == [
        (0, 0, 48, 48), (0, 48, 48, 2), (48, 0, 13, 48), (48, 48, 13, 2)]
    for bad in ([8, 16], [16, 8, 48], [6, 48], "some"):
        with pytest.raises(ValueError, match="buckets"):
            l3c.L3CCodec(codec.spec, codec.params, tile=48, buckets=bad)


def test_streams_without_buckets_and_with_other_buckets_decode(codec, photo):
    """A stream says its buckets (or that it has none, as streams written before them), and
    any codec of the model decodes it at those shapes (32x37: computed at 32x40 without buckets
    and with the default ones, at 48x48 with the others; shapes the tests above compiled)."""
    image = photo[3:35, 7:44]
    for buckets in (None, [48], [8, 24, 48]):
        other = l3c.L3CCodec(codec.spec, codec.params, tile=48, buckets=buckets)
        np.testing.assert_array_equal(codec.decompress(other.compress(image)), image)
        np.testing.assert_array_equal(other.decompress(codec.compress(image)), image)


# ---- sub-pixel steps (model.subpixel_steps 2 and 4) ------------------------------------------------


def _subpixel_codec(config, steps, head, representation, window):
    """An L3CCodec of the tiny model with sub-pixel steps, every parameter perturbed (the light
    heads' zero-initialised output convs too, so that every step's context matters)."""
    from jaxcomp.configs import apply_overrides

    representation, _, pyramid = representation.partition("/")  # "rgb/subsample": that pyramid
    cfg = apply_overrides(config, [f"model.subpixel_steps={steps}", f"model.subpixel_head={head}",
                                   f"model.representation={representation}",
                                   f"model.rgb_pyramid={pyramid or 'bicubic'}"])
    spec = l3c.spec_from_config(cfg.model)
    params = jit_init(l3c.L3C(spec).init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + rng.normal(0.0, 0.3 if path[-1].key == "bias" else 0.05, x.shape).astype(x.dtype),
        params)
    return l3c.L3CCodec(spec, params, tile=32, window=window, top_min_side=1)  # every top level, even 4x4


@pytest.mark.parametrize("steps,head,representation,odd_size", [
    (4, "light", "learned", False),  # the architecture of the bucket test below: they share compiled code
    (4, "light", "rgb/subsample", True),  # step 0 is x(s+1): copied, never coded
    pytest.param(2, "shared", "rgb", True, marks=pytest.mark.slow),
])
def test_subpixel_steps_roundtrip_exactly_at_the_models_rate(l3c_tiny_config, photo, steps, head, representation,
                                                             odd_size):
    """With sub-pixel steps the codec decodes bit-exactly, its bitstream is the information
    content of the symbols plus the container's overhead, and with PMFs over all levels that
    information content is the training loss (the model's cross-entropy) of the image: the
    coder codes each sub-pixel with the distribution of its step. (The slow case: the checkerboard
    with the shared head on the RGB pyramid, and an odd size: padding and two tiles. The subsampled
    pyramid codes 3 steps per scale: its step 0 is the coarser scale, which the decoder copies.)

    Guards against: the decoder filling decoded sub-pixels in at the wrong positions, or
    conditioning a step on symbols the encoder had not (no exact roundtrip); the coder taking
    a step's parameters at another step's positions, or the training pass combining the steps
    wrongly (rate != loss); with the subsampled pyramid, the loss counting the known step 0 or the
    coder coding it (rate != loss), the decoder not copying it in (no exact roundtrip).
    """
    codec = _subpixel_codec(l3c_tiny_config, steps, head, representation, window=0)
    coded_steps = steps - int(codec.spec.known_step0())
    levels = 2 + codec.top_levels  # the subsampled pyramid codes its top through 2 more levels by default
    assert codec.top_levels == (l3c.DEFAULT_TOP_LEVELS if codec.spec.known_step0() else 0)
    assert len(codec.payload_names()) == 1 + levels * coded_steps * (3 if representation.startswith("rgb") else 2)
    crop = photo[:32, :32]
    data, ideal = codec.compress(crop, return_bits=True)
    np.testing.assert_array_equal(codec.decompress(data), crop)
    assert len(data) * 8 < ideal + 8 * (300 + 8 * codec.payloads_per_tile())  # header + per-payload words
    estimate = codec.estimate_bits(crop)
    assert abs(ideal - estimate) / estimate < 0.002, (ideal, estimate)
    if odd_size:
        image = photo[100:137, 40:70]  # 37x30: two tiles of at most 32x32, each padded
        np.testing.assert_array_equal(codec.decompress(codec.compress(image)), image)
    maps = codec.bit_maps(crop)  # one map per scale and channel, the steps' bits in place
    assert maps["x(0) R"].shape == (32, 32)
    side = 8 >> codec.top_levels  # x(2) is 8x8; its own pyramid (top_levels) halves it
    if codec.top_levels:  # the top's own levels get maps too
        assert f"x({1 + codec.top_levels}) R" in maps and f"x({2 + codec.top_levels}) R" not in maps
    top = side * side * codec.spec.channels(2) * np.log2(codec.spec.num_levels(2))
    assert 0 <= ideal - sum(float(m.sum()) for m in maps.values()) - top < 96  # the top scale's uniform code (words)


def test_top_levels_code_the_top_scale_at_the_coarsest_decoders_loss(l3c_tiny_config, photo):
    """With the subsampled pyramid, x(S) is coded from its own subsample x(S+1) = x(S)[::2, ::2] by
    D(S) (``top_levels``), instead of uniformly: the bits it saves are the uniform code of x(S)
    minus the uniform code of x(S+1) and D(S)'s training loss on x(S) given x(S+1), which the
    model's forward pass on the image's own subsample (whose x(S-1) is x(S)) measures
    independently of the coder; the same one level further up (``top_levels=2``, the default, on
    the image's subsample of subsample). Odd sizes, 1x1 and grayscale decode exactly; streams
    without ``top_levels`` (written before it) decode with a codec that has it; a bicubic model
    refuses; a stream naming an impossible ``top_levels`` gets a BitstreamError naming it.

    Guards against: the top's pyramid taking other pixels than the decoder copies in (no exact
    roundtrip), coding it (at any level) with another decoder or with coarser features (rate !=
    loss), the stream not recording it (payload count), another default, an unchecked stream."""
    from jaxcomp.configs import apply_overrides

    base = _subpixel_codec(l3c_tiny_config, 4, "light", "rgb/subsample", window=0)
    rng = np.random.default_rng(1)  # D(1) made unlike D(S), so that coding with the wrong one shows
    params = dict(base.params, D1=jax.tree.map(lambda x: x + rng.normal(0.0, 0.3, x.shape).astype(x.dtype),
                                               base.params["D1"]))
    base = l3c.L3CCodec(base.spec, params, tile=32, window=0, top_min_side=1)
    assert base.top_levels == 2  # the default for the subsampled pyramid
    flat = l3c.L3CCodec(base.spec, base.params, tile=32, window=0, top_levels=0, top_min_side=1)
    one = l3c.L3CCodec(base.spec, base.params, tile=32, window=0, top_levels=1, top_min_side=1)
    crop = photo[40:72, 8:40]
    bits = [codec.compress(crop, return_bits=True)[1] for codec in (flat, one, base)]
    scales = base.spec.scales
    uniform = lambda n: n * n * 3 * 8.0  # noqa: E731
    side = 32 >> scales
    for level in (1, 2):  # x(S+level-1) given x(S+level), by D(S): the loss on the image's 2**level subsample
        out = base.model.apply({"params": base.params}, crop[None, ::2**level, ::2**level])
        loss = float(l3c.bits_per_scale(base.spec, out)[scales - 1][0])
        expected = uniform(side >> (level - 1)) - uniform(side >> level) - loss
        saved = bits[level - 1] - bits[level]
        assert abs(saved - expected) < 2e-3 * loss, (level, saved, expected)
    assert len(one.payload_names()) == len(flat.payload_names()) + 9 == len(base.payload_names()) - 9
    for image in (photo[3:40, 5:58], photo[:1, :1], photo[9:29, 3:12, 0]):
        np.testing.assert_array_equal(base.decompress(base.compress(image)), image)
    np.testing.assert_array_equal(base.decompress(flat.compress(crop)), crop)
    np.testing.assert_array_equal(flat.decompress(base.compress(crop)), crop)  # the stream says its levels
    from jaxcomp.coding import pack, unpack

    meta, payloads = unpack(base.compress(crop), "l3c", base.fingerprint)
    for bad in (-1, l3c.MAX_TOP_LEVELS + 1, True, 1.5, "2"):
        with pytest.raises(BitstreamError, match="top_levels"):
            base.decompress(pack("l3c", base.fingerprint, dict(meta, top_levels=bad), payloads))
    bicubic = apply_overrides(l3c_tiny_config, ["model.subpixel_steps=4", "model.representation=rgb"])
    bicubic = l3c.L3CCodec(l3c.spec_from_config(bicubic.model), base.params, tile=32)
    assert bicubic.top_levels == 0
    meta, payloads = unpack(bicubic.compress(crop), "l3c", bicubic.fingerprint)
    with pytest.raises(BitstreamError, match="top_levels"):  # ... its payloads would be read as another model's
        bicubic.decompress(pack("l3c", bicubic.fingerprint, dict(meta, top_levels=1), payloads))
    with pytest.raises(ValueError, match="rgb_pyramid='bicubic'"):
        l3c.L3CCodec(bicubic.spec, base.params, tile=32, top_levels=1)
    with pytest.raises(ValueError, match="top_levels must be"):
        l3c.L3CCodec(base.spec, base.params, tile=32, top_levels=-1)


def test_tiles_with_a_small_top_keep_its_uniform_code(l3c_tiny_config, photo):
    """``top_min_side``: a tile codes a level of its top's pyramid through D(S) only while the map
    coded there is at least that many px on its shorter side (small maps cost more than their
    uniform code). Each tile follows the rule on its own size; the stream records the rule, so a codec
    with another one decodes it; streams without the key (written before it) code every level; bad
    values in a stream get a BitstreamError naming the key. The fewest keys: an image whose tiles all
    code the same number r of levels writes the stream of ``top_levels=r, top_min_side=1`` byte for
    byte (``top_levels=0``: no key).

    Guards against: the comparison off by one, the longer side deciding, the encoder or the
    estimate ignoring the rule, the decoder using its own rule instead of the stream's, another
    meaning of a missing key, an unchecked stream value, another default."""
    from jaxcomp.coding import pack, unpack

    scales = 2  # the tiny model: a 32x32 tile's top x(2) is 8x8
    assert [l3c.tile_top_levels(32, 32, scales, 2, m) for m in (1, 4, 5, 8, 9)] == [2, 2, 1, 1, 0]
    assert l3c.tile_top_levels(32, 16, scales, 2, 8) == 0  # 8x4: the shorter side decides
    assert l3c.tile_top_levels(29, 32, scales, 2, 8) == 1  # the tile padded to 32 first
    assert l3c.tile_top_levels(40, 40, scales, 2, 5) == 2  # 10x10, then 5x5 (halved rounding up)
    assert l3c.tile_top_levels(32, 32, scales, 1, 1) == 1  # never more than top_levels
    assert l3c.tile_top_levels(1, 1, scales, 2, 1) == 2
    base = _subpixel_codec(l3c_tiny_config, 4, "light", "rgb/subsample", window=0)  # top_min_side=1: both levels
    assert l3c.L3CCodec(base.spec, base.params, tile=32).top_min_side == l3c.DEFAULT_TOP_MIN_SIDE == 12

    def codec(top_levels=2, min_side=8):
        return l3c.L3CCodec(base.spec, base.params, tile=32, window=0, buckets=None, top_levels=top_levels,
                            top_min_side=min_side)

    mixed = codec()
    image = photo[:32, :48]  # without buckets: a 32x32 tile (top 8x8: one level) and a 32x16 one (top 8x4: none)
    data, bits = mixed.compress(image, return_bits=True)
    np.testing.assert_array_equal(mixed.decompress(data), image)
    np.testing.assert_array_equal(codec(min_side=1).decompress(data), image)  # the stream's rule, not the codec's
    meta, payloads = unpack(data, "l3c", base.fingerprint)
    assert meta["top_min_side"] == 8 and len(payloads) == base.payloads_per_tile(1) + base.payloads_per_tile(0)
    alone = (codec(top_levels=1, min_side=1).compress(image[:, :32], return_bits=True)[1]
             + codec(top_levels=0, min_side=1).compress(image[:, 32:], return_bits=True)[1])
    assert bits == pytest.approx(alone, rel=1e-9)  # each tile coded as on its own with its levels
    assert abs(mixed.estimate_bits(image) - bits) < 0.002 * bits
    with pytest.raises(BitstreamError, match="payloads"):  # read as a stream of every level: not these payloads
        mixed.decompress(pack("l3c", base.fingerprint, {k: v for k, v in meta.items() if k != "top_min_side"},
                              payloads))
    meta1, payloads1 = unpack(codec(min_side=1).compress(image), "l3c", base.fingerprint)
    assert len(payloads1) == 2 * base.payloads_per_tile(2) and "top_min_side" not in meta1
    np.testing.assert_array_equal(mixed.decompress(pack("l3c", base.fingerprint, meta1, payloads1)), image)
    small = photo[:16, :40]  # tiles of 16x32 and 16x8, tops 4x8 and 4x2: no top level, the stream says none
    assert mixed.compress(small) == codec(top_levels=0).compress(small)
    assert "top_levels" not in unpack(mixed.compress(small), "l3c", base.fingerprint)[0]  # as written before top levels
    large = photo[:32, :64]  # two 32x32 tiles cut at neither level by min side 4: no key for the rule
    assert "top_min_side" not in unpack(codec(min_side=4).compress(large), "l3c", base.fingerprint)[0]
    assert codec(min_side=4).compress(large) == codec(min_side=1).compress(large)
    assert mixed.compress(large) == codec(top_levels=1, min_side=1).compress(large)  # both cut to one level
    for bad in (0, -1, True, 1.5, "8", 1 << 15):
        with pytest.raises(BitstreamError, match="top_min_side"):
            mixed.decompress(pack("l3c", base.fingerprint, dict(meta, top_min_side=bad), payloads))
    with pytest.raises(ValueError, match="top_min_side must be"):
        codec(min_side=0)


def test_top_levels_benchmark_crops_and_refuses_a_folder_without_the_originals(tmp_path, capsys):
    """``experiments/bench_l3c_top.py`` (which chose DEFAULT_TOP_MIN_SIDE on the validation
    originals): its crops lie inside the image, repeat with the seed, and a side larger than the
    image or a folder without the split's originals is a clear error, not a traceback."""
    from experiments.bench_l3c_top import crop_positions, main

    corners = crop_positions(40, 70, 16, 50, seed=3)
    assert corners == crop_positions(40, 70, 16, 50, seed=3) != crop_positions(40, 70, 16, 50, seed=4)
    assert all(0 <= y <= 24 and 0 <= x <= 54 for y, x in corners)
    assert crop_positions(16, 16, 16, 2, seed=0) == [(0, 0), (0, 0)]
    with pytest.raises(ValueError, match="no 41x41 crop"):
        crop_positions(40, 70, 41, 1, seed=0)
    assert main(["--photos", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "the val originals are not in" in capsys.readouterr().err


@pytest.mark.parametrize("representation,window", [("learned", 0), ("rgb/subsample", 8)])
def test_subpixel_steps_at_a_larger_bucket_code_only_the_tile(l3c_tiny_config, photo, representation, window):
    """With sub-pixel steps, tiles computed at a larger bucket (37x26 -> tiles padded to 20x28,
    computed at 32x32 with buckets [16, 32]) decode exactly and cost what they cost at their own
    shapes (within 3%: only the border predictions see the bucket's filled padding; measured
    +0.36%). It does not pin which bucket positions a step's PMFs come from: this test model's
    PMFs hardly depend on the position (taking the first positions instead costs +0.26%). The
    subsampled pyramid the same, with windowed PMFs and their escape bin (``window=8``)."""
    codec = _subpixel_codec(l3c_tiny_config, 4, "light", representation, window=window)
    big = l3c.L3CCodec(codec.spec, codec.params, tile=32, window=window, buckets=[16, 32], top_min_side=1)
    image = photo[100:137, 40:66]
    data, ideal = big.compress(image, return_bits=True)
    np.testing.assert_array_equal(codec.decompress(data), image)
    _, own = codec.compress(image, return_bits=True)
    assert abs(ideal - own) < 0.03 * own, (ideal, own)


def test_the_shipped_photos_split_into_validation_and_test(l3c_tiny_config, tmp_path):
    """The main job's photos have explicit roles (samples/splits.json): 4 for decisions, 4 for the
    reported table only; a folder run with data.holdout=samples_val validates on the validation
    originals and never reads the test ones (data.holdout=samples keeps all 8 for validation)."""
    from PIL import Image

    from jaxcomp.configs import apply_overrides
    from jaxcomp.data import DataError, build_image_data, held_out_names, sample_roles

    roles = sample_roles()
    val, test = sample_image_paths("val"), sample_image_paths("test")
    assert len(val) == len(test) == 4 and sorted(val + test) == sample_image_paths()
    assert {os.path.basename(p) for p in test} == held_out_names("test") == {n for n, r in roles.items() if r == "test"}
    with pytest.raises(DataError, match="role"):
        held_out_names("train")
    for name in sorted(roles) + ["other1.png", "other2.png"]:
        Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(tmp_path / name)
    config = apply_overrides(l3c_tiny_config, ["data.source=folder", f"data.path={tmp_path}",
                                               "data.holdout=samples_val"])
    data = build_image_data(config.data)
    assert {os.path.basename(f) for f in data.val.files} == held_out_names("val")
    assert sorted(os.path.basename(f) for f in data.train.files) == ["other1.png", "other2.png"]
    config.data.holdout = "samples"
    assert len(build_image_data(config.data).val.files) == 8


@pytest.mark.slow
def test_rgb_shared_codes_exactly_at_its_recursive_rate(repo, photo):
    """The paper's "RGB Shared" (configs/l3c.py:rgb_shared: one decoder without feature fusion,
    applied at 4 scales) codes a crop and an odd-sized two-tile image bit-exactly, at the
    information content of its (recursive) model: the estimate of the full forward pass."""
    from jaxcomp.configs import apply_overrides, load_config

    cfg = apply_overrides(load_config(f"{repo}/configs/l3c.py:rgb_shared"),
                          ["model.features=8", "model.blocks=1", "model.mixtures=2"])
    spec = l3c.spec_from_config(cfg.model)
    params = jit_init(l3c.L3C(spec).init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: x + rng.normal(0.0, 0.05, x.shape).astype(x.dtype), params)
    codec = l3c.L3CCodec(spec, params, tile=32, window=0)
    assert len(codec.payload_names()) == 1 + 4 * 3
    crop = photo[:32, :32]
    data, ideal = codec.compress(crop, return_bits=True)
    np.testing.assert_array_equal(codec.decompress(data), crop)
    estimate = codec.estimate_bits(crop)
    assert abs(ideal - estimate) / estimate < 0.002, (ideal, estimate)
    # validation (checkpoint choice) measures that recursive model, not the training loss's x(0) | x(1)
    task = l3c.L3CTask(cfg)
    val = jax.jit(lambda p, x: task.eval_step(SimpleNamespace(params=p), {"image": x}))(params, crop[None])
    assert float(val["bpsp"][0]) * crop.size == pytest.approx(estimate, rel=1e-4)
    assert set(val) == {"bpsp"} | {f"bpsp_s{s}" for s in range(5)}  # 4 coded scales and the uniform top
    image = photo[100:137, 40:70]
    np.testing.assert_array_equal(codec.decompress(codec.compress(image)), image)


def test_stored_executables_code_the_same_streams(l3c_tiny_config, tmp_path):
    """With jaxcomp's executable cache on (the ``jaxcomp`` command's default), the coder's
    functions are compiled afresh under other module names and stored: the same bytes, decoded
    exactly by a codec with the cache off (a later process loads them: tests/test_cli.py). A
    smaller image of the same bucket, whose inputs are padded on the host (numpy arrays where the
    first passes the device's own), needs no other program."""
    from jaxcomp import xla

    codec = _subpixel_codec(l3c_tiny_config, 4, "light", "rgb/subsample", window=0)
    image = load_image(sample_image_paths()[3])[:16, :16]  # the whole 16x16 bucket of tile=32
    plain = codec.compress(image)
    xla.enable_executable_cache(str(tmp_path))
    stored = codec.compress(image)
    assert stored == plain and len(os.listdir(tmp_path)) >= 3
    np.testing.assert_array_equal(codec.decompress(stored), image)
    files = sorted(os.listdir(tmp_path))
    smaller = image[:10, :11]  # 12x12 with the edge padding of 2**scales, computed at 16x16
    np.testing.assert_array_equal(codec.decompress(codec.compress(smaller)), smaller)
    assert sorted(os.listdir(tmp_path)) == files
    xla.enable_executable_cache(None)
    np.testing.assert_array_equal(codec.decompress(stored), image)


def test_stored_executables_are_kept_apart_by_architecture(l3c_tiny_config, photo, tmp_path):
    """Two architectures with the same parameter tree (the bicubic and the subsampled RGB pyramid) in
    one executable-cache folder: each codes with its own compiled functions, so each stream decodes
    (the stored executables' key holds the architecture)."""
    from jaxcomp import xla

    xla.enable_executable_cache(str(tmp_path / "executables"))  # restored after the test (conftest)
    crop = photo[7:51, 11:71]  # 44x60: a bucket no other test of this model compiles
    for representation in ("rgb", "rgb/subsample"):
        codec = _subpixel_codec(l3c_tiny_config, 4, "light", representation, window=0)
        np.testing.assert_array_equal(codec.decompress(codec.compress(crop)), crop)
