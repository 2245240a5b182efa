"""SC bitstreams: the label map, the heatmap and only the preserved latent symbols.

An SC file (the shared container, codec ``gc``, an SC model's fingerprint) holds three payloads,
each a constriction ANS stream, whose sizes :meth:`SCCodec.part_bits` reports separately:

1. **label map** ``[H, W]`` in ``0..K-1``, lossless, under an adaptive left/up context model
   (:func:`encode_label_map`): the probability of a pixel's label given the labels left of and
   above it (``K`` = outside the image) is an adaptive count table ``[K+1, K+1, K]``, started at
   1 per label plus 8 for the left and 8 for the up label (a map is mostly flat), and updated
   with every coded label. Pixels are coded by anti-diagonal wavefronts (``y + x = t``): a
   wavefront's contexts are all in earlier ones, so the decoder decodes each wavefront with one
   vectorised call and updates the counts after it, as the encoder did.
2. **heatmap** ``[ceil(H/16), ceil(W/16)]`` in ``{0, 1}`` (1 = preserved), with the same coder
   (``K = 2``).
3. **latent**: the symbols of the preserved cells only, raster order, channels innermost, under
   the model's factorized prior (or uniform when smaller, a flag in the header), as GC's.

The decoder rebuilds the latent (zero where synthesised), pads the label map as the encoder did
(edge), and runs G on ``[heatmap * w_hat, F(map)]``; noise channels, if any, are seeded from the
payloads. As for GC, files record the numerics and a CRC-32 of the decoded pixels, and anything
that does not check out is refused with a :class:`~jaxcomp.coding.BitstreamError`.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.codecs import common
from jaxcomp.codecs.gc import context
from jaxcomp.codecs.gc.codec import check_image, load_gc_model
from jaxcomp.codecs.gc.model import FACTOR, GC, LEVELS, GCSpec, centers, to_pixels

SC_FORMAT = 1       # of the SC payloads inside the container
CONTEXT_BONUS = 8   # initial extra count of the left and of the up label (see the module docstring)
ZERO_SYMBOL = LEVELS // 2  # the centre 0, what a synthesised cell's latent is


def _wavefronts(h: int, w: int) -> list[np.ndarray]:
    """Flat pixel indices of each anti-diagonal ``y + x = t``, ``t = 0 .. h + w - 2`` (y ascending)."""
    ys, xs = np.indices((h, w))
    t = (ys + xs).ravel()
    order = np.argsort(t, kind="stable")
    bounds = np.searchsorted(t[order], np.arange(h + w))
    return [order[bounds[i]:bounds[i + 1]] for i in range(h + w - 1)]


def _contexts(labels_flat: np.ndarray, idx: np.ndarray, w: int, outside: int) -> tuple[np.ndarray, np.ndarray]:
    """Left and up labels of the pixels ``idx`` (``outside`` beyond the image's edge)."""
    y, x = idx // w, idx % w
    left = np.where(x > 0, labels_flat[np.maximum(idx - 1, 0)], outside)
    up = np.where(y > 0, labels_flat[np.maximum(idx - w, 0)], outside)
    return left, up


def _initial_counts(classes: int) -> np.ndarray:
    counts = np.ones((classes + 1, classes + 1, classes), np.int64)
    ar = np.arange(classes)
    counts[ar, :, ar] += CONTEXT_BONUS   # the label of the left neighbour
    counts[:, ar, ar] += CONTEXT_BONUS   # the label of the up neighbour
    return counts


def _pmfs(counts: np.ndarray, left: np.ndarray, up: np.ndarray) -> np.ndarray:
    c = counts[left, up].astype(np.float64)
    return c / c.sum(1, keepdims=True)


def label_map_parts(labels: np.ndarray, classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(symbols, pmfs)`` of every wavefront of ``labels`` (int ``[H, W]`` in ``0..classes-1``)
    under the adaptive context model."""
    h, w = labels.shape
    flat = np.ascontiguousarray(labels, np.int64).ravel()
    counts = _initial_counts(classes)
    parts = []
    for idx in _wavefronts(h, w):
        left, up = _contexts(flat, idx, w, classes)
        symbols = flat[idx]
        parts.append((symbols, _pmfs(counts, left, up)))
        np.add.at(counts, (left, up, symbols), 1)
    return parts


def encode_label_map(labels: np.ndarray, classes: int) -> np.ndarray:
    """Lossless code of a label map (int ``[H, W]`` in ``0..classes-1``), ``uint32 [words]``."""
    from jaxcomp.coding import encode_categorical_parts

    return encode_categorical_parts(label_map_parts(labels, classes))


def decode_label_map(words: np.ndarray, shape: tuple[int, int], classes: int) -> np.ndarray:
    """Inverse of :func:`encode_label_map`: ``int32 [H, W]`` (raises ``CodingError``)."""
    from jaxcomp.coding import CategoricalStreamDecoder

    h, w = shape
    flat = np.zeros(h * w, np.int64)
    counts = _initial_counts(classes)
    decoder = CategoricalStreamDecoder(words)
    for idx in _wavefronts(h, w):
        left, up = _contexts(flat, idx, w, classes)
        symbols = decoder.decode(_pmfs(counts, left, up)).astype(np.int64)
        flat[idx] = symbols
        np.add.at(counts, (left, up, symbols), 1)
    return flat.reshape(h, w).astype(np.int32)


def label_map_bits(labels: np.ndarray, classes: int) -> float:
    """Information content of a label map under the context model, in bits (before coding)."""
    from jaxcomp.coding import ideal_bits

    return sum(ideal_bits(s, p) for s, p in label_map_parts(labels, classes))


def check_semantic(semantic: Any, shape: tuple[int, int] | None, classes: int) -> np.ndarray:
    """A label map for an image of ``shape`` (``None``: any ``[H, W]``): integers ``[H, W]`` in
    ``0..classes-1``; returned as ``int32``; anything else is a ``ValueError`` that says what is wrong."""
    want = "[H, W]" if shape is None else f"[H, W] = {tuple(shape)}"
    if semantic is None:
        raise ValueError(f"the SC codec needs the image's label map: integers {want} in 0..{classes - 1}")
    semantic = np.asarray(semantic)
    if not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"the label map must hold integer classes, got dtype {semantic.dtype}")
    if semantic.ndim != 2 or (shape is not None and semantic.shape != tuple(shape)):
        raise ValueError(f"the label map has shape {semantic.shape}; it must be {want}")
    if semantic.size and (semantic.min() < 0 or semantic.max() >= classes):
        raise ValueError(f"the label map's classes must lie in 0..{classes - 1} (this model has {classes}), "
                         f"got {int(semantic.min())}..{int(semantic.max())}")
    return np.ascontiguousarray(semantic, np.int32)


def check_heatmap(heatmap: Any, shape: tuple[int, int]) -> np.ndarray:
    """A binary heatmap at latent resolution ``shape`` (bool, or integers in {0, 1}); returned as
    ``uint8``; anything else is a ``ValueError``."""
    heatmap = np.asarray(heatmap)
    if heatmap.dtype != np.bool_ and not np.issubdtype(heatmap.dtype, np.integer):
        raise ValueError(f"the heatmap must be binary (bool or integers 0/1), got dtype {heatmap.dtype}")
    if heatmap.shape != tuple(shape):
        raise ValueError(f"the heatmap has shape {heatmap.shape}; at latent resolution (1/{FACTOR}, rounded up) "
                         f"this image needs {tuple(shape)}")
    if heatmap.size and (heatmap.min() < 0 or heatmap.max() > 1):
        raise ValueError("the heatmap must be binary: 1 = code the latent, 0 = synthesise")
    return np.ascontiguousarray(heatmap, np.uint8)


def heatmap_from_classes(semantic: np.ndarray, synthesize: list[int] | tuple[int, ...], classes: int) -> np.ndarray:
    """The heatmap that synthesises the classes ``synthesize`` of ``semantic`` (integers ``[H, W]`` in
    ``0..classes-1``, ``classes`` = the model's ``semantic_classes``, :attr:`SCCodec.classes`):
    ``uint8 [ceil(H/16), ceil(W/16)]``, 1 (preserved) where a cell holds any pixel of another class.
    That is the training rule of ``sc.chosen="preserve"`` (the paper's, and every shipped config's:
    a cell touching a kept class is kept, :func:`jaxcomp.codecs.gc.semantic.cells_touched`); a model
    trained with ``chosen="synthesize"`` synthesised every cell touching a synthesised class instead,
    so at mixed cells it saw the opposite rule: give such a model your own heatmap.

    A map that is not integers ``[H, W]`` in ``0..classes-1`` (:func:`check_semantic`), or classes to
    synthesise that are not integers in ``0..classes-1``, is a ``ValueError``: either would give a
    heatmap that synthesises nothing, without a word."""
    from jaxcomp.checks import count, index_array

    classes = count(classes, "classes (the model's semantic_classes)")
    semantic = check_semantic(semantic, None, classes)
    h, w = semantic.shape
    listed = np.asarray([synthesize] if np.isscalar(synthesize) else list(synthesize))  # a class, list or set
    index_array(listed, classes, "the classes to synthesise", "classes")
    keep = ~np.isin(semantic, listed)
    keep = np.pad(keep, ((0, -h % FACTOR), (0, -w % FACTOR)), mode="edge")
    lh, lw = keep.shape[0] // FACTOR, keep.shape[1] // FACTOR
    return keep.reshape(lh, FACTOR, lw, FACTOR).any((1, 3)).astype(np.uint8)


@common.in_fixed_numerics
class SCCodec:
    """Compress/decompress with a selective (SC) GC generator (``params``: the generator player's tree).

    ``compress(image uint8 [H, W, 3] | [H, W], semantic int [H, W], heatmap [ceil(H/16), ceil(W/16)]
    | None) -> bytes`` (heatmap ``None``: everything preserved) and ``decompress(bytes) -> uint8``
    image (``maps=True``: also the label map and the heatmap). ``part_bits(data)`` gives the bits
    of the label map, the heatmap and the latent.
    """

    codec_name = "gc"

    def __init__(self, spec: GCSpec, params: Any):
        if not spec.semantic_classes:
            raise ValueError("this is a global (GC) model; SCCodec codes selective models (semantic_classes > 0): "
                             "use GCCodec")
        self.spec, self.classes = spec, spec.semantic_classes
        self.params = jax.tree.map(jnp.asarray, params)
        self.model = GC(spec)
        self.pmfs = context.prior_pmfs(params["prior_logits"], spec.channels)  # [C, 5], float64, host
        from jaxcomp.coding import fingerprint

        self.fingerprint = fingerprint(params, dict(codec="gc", sc_format=SC_FORMAT, **dataclasses.asdict(spec)))
        self.numerics = common.numerics()
        model = self.model

        def analyse(params, x, semantic):
            w = model.apply({"params": params}, x, semantic, method=GC.encode)
            return model.apply({"params": params}, w, method=GC.quantize)[1]

        def synthesise(params, symbols, heatmap, semantic, noise):
            w_hat = centers()[symbols] * heatmap[..., None]
            x_hat = model.apply({"params": params}, w_hat, noise, semantic, method=GC.decode)
            return jnp.round(to_pixels(x_hat)).astype(jnp.uint8)

        self._analyse = jax.jit(analyse)
        self._synthesise = jax.jit(synthesise)

    @staticmethod
    def latent_shape(height: int, width: int) -> tuple[int, int]:
        return -(-height // FACTOR), -(-width // FACTOR)

    @staticmethod
    def _pad(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        pad = ((0, -h % FACTOR), (0, -w % FACTOR)) + ((0, 0),) * (x.ndim - 2)
        return np.pad(x, pad, mode="edge") if pad[0][1] or pad[1][1] else x

    def _inputs(self, image: Any, semantic: Any, heatmap: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = check_image(image)
        semantic = check_semantic(semantic, image.shape[:2], self.classes)
        lshape = self.latent_shape(*image.shape[:2])
        heatmap = np.ones(lshape, np.uint8) if heatmap is None else check_heatmap(heatmap, lshape)
        return image, semantic, heatmap

    def analyse(self, image: np.ndarray, semantic: np.ndarray) -> np.ndarray:
        """The latent symbols ``int32 [ceil(H/16), ceil(W/16), C]`` of an image and its label map."""
        image, semantic, _ = self._inputs(image, semantic, None)
        rgb = self._pad(common.as_rgb(image))
        return np.asarray(self._analyse(self.params, rgb[None], self._pad(semantic)[None]))[0]

    def synthesise(self, symbols: np.ndarray, heatmap: np.ndarray, semantic: np.ndarray, seed: int = 0) -> np.ndarray:
        """G's image ``uint8 [H, W, 3]`` for ``symbols`` (integers ``[h, w, C]`` in ``0..4``, zeroed where
        ``heatmap`` is 0), the binary ``heatmap [h, w]`` (:func:`check_heatmap`) and the label map
        (integers ``[H, W]`` in ``0..K-1``, :func:`check_semantic`; ``h, w = ceil(H/16), ceil(W/16)``);
        ``seed`` draws the noise channels (if any). Anything else is a ``ValueError``."""
        semantic = check_semantic(semantic, None, self.classes)  # the checks of compress and reconstruct
        height, width = semantic.shape
        symbols = common.check_symbols(symbols, LEVELS, "the SC codec", channels=self.spec.channels)
        if symbols.shape[:2] != self.latent_shape(height, width) or np.shape(heatmap) != symbols.shape[:2]:
            raise ValueError(f"the SC codec: a {height}x{width} label map needs symbols and a heatmap of "
                             f"{self.latent_shape(height, width)} positions, got {symbols.shape} and "
                             f"{np.shape(heatmap)}")
        heatmap = check_heatmap(heatmap, symbols.shape[:2])
        noise = None
        if self.spec.noise_channels:
            key = jax.random.key(seed, impl="threefry2x32")  # the same bits whatever the process's default PRNG
            noise = jax.random.normal(key, (1,) + symbols.shape[:2] + (self.spec.noise_channels,), jnp.float32)
        out = self._synthesise(self.params, jnp.asarray(symbols)[None], jnp.asarray(heatmap, jnp.float32)[None],
                               jnp.asarray(self._pad(semantic))[None], noise)
        return np.asarray(out)[0][:height, :width]

    def reconstruct(self, image: np.ndarray, semantic: np.ndarray, heatmap: np.ndarray | None = None) -> np.ndarray:
        """What :meth:`decompress` of :meth:`compress` gives, without coding (noise seeded with 0)."""
        image, semantic, heatmap = self._inputs(image, semantic, heatmap)
        symbols = self.analyse(image, semantic)
        return common.as_mode(self.synthesise(symbols, heatmap, semantic), image.ndim == 2)

    def _latent_payload(self, symbols: np.ndarray, heatmap: np.ndarray) -> tuple[str, bytes]:
        from jaxcomp.coding import encode_categorical, encode_uniform

        kept = symbols[heatmap.astype(bool)]  # [n, C], raster order
        flat = kept.reshape(-1)
        prior = encode_categorical(flat, np.tile(self.pmfs, (len(kept), 1))).tobytes()
        uniform = encode_uniform(flat, LEVELS).tobytes()
        return ("p", prior) if len(prior) <= len(uniform) else ("u", uniform)

    def compress(self, image: np.ndarray, semantic: np.ndarray, heatmap: np.ndarray | None = None) -> bytes:
        """``uint8 [H, W, 3]`` (or ``[H, W]``), its label map (integers ``[H, W]`` in ``0..K-1``) and a
        binary heatmap (``[ceil(H/16), ceil(W/16)]``, 1 = code, 0 = synthesise; ``None``: all 1)
        -> bitstream ``bytes``."""
        from jaxcomp.coding import pack

        image, semantic, heatmap = self._inputs(image, semantic, heatmap)
        symbols = self.analyse(image, semantic)
        symbols = np.where(heatmap[..., None].astype(bool), symbols, ZERO_SYMBOL)
        map_payload = encode_label_map(semantic, self.classes).tobytes()
        heat_payload = encode_label_map(heatmap, 2).tobytes()
        ent, latent_payload = self._latent_payload(symbols, heatmap)
        payloads = [map_payload, heat_payload, latent_payload]
        seed = zlib.crc32(b"".join(payloads))
        recon = common.as_mode(self.synthesise(symbols, heatmap, semantic, seed=seed), image.ndim == 2)
        meta = dict(h=image.shape[0], w=image.shape[1], m="L" if image.ndim == 2 else "RGB", e=ent, k=self.classes,
                    sc=SC_FORMAT, n=self.numerics, c=zlib.crc32(recon.tobytes()))
        return pack(self.codec_name, self.fingerprint, meta, payloads)

    @staticmethod
    def part_bits(data: bytes) -> dict[str, int]:
        """Bits of an SC file by part: ``map``, ``heatmap``, ``latent`` (the payloads) and ``header``
        (the container: magic, fingerprint, metadata, sizes, checksum); ``total`` = all of them."""
        from jaxcomp.coding import unpack

        _, payloads = unpack(data, SCCodec.codec_name)
        if len(payloads) != 3:
            raise ValueError("not an SC bitstream (it does not have the label map, heatmap and latent payloads)")
        parts = dict(zip(("map", "heatmap", "latent"), (8 * len(p) for p in payloads)))
        parts["total"] = 8 * len(data)
        parts["header"] = parts["total"] - parts["map"] - parts["heatmap"] - parts["latent"]
        return parts

    def decompress(self, data: bytes, maps: bool = False
                   ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` for a grayscale input); with ``maps``,
        ``(image, label map int32 [H, W], heatmap uint8 [ceil(H/16), ceil(W/16)])``.

        Raises:
          jaxcomp.coding.BitstreamError: not an SC bitstream of this model, truncated, corrupt,
            written with other numerics, or decoded pixels that differ from the encoder's.
        """
        from jaxcomp.coding import BitstreamError, CodingError, decode_categorical, decode_uniform, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, mode, ent, crc = int(meta["h"]), int(meta["w"]), meta["m"], meta["e"], int(meta["c"])
            classes, version, stream_numerics = int(meta["k"]), int(meta["sc"]), str(meta["n"])
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"not an SC bitstream, or its metadata is incomplete: {e}") from e
        if version != SC_FORMAT:
            raise BitstreamError(f"SC payload format {version}; this jaxcomp reads format {SC_FORMAT}")
        if not (FACTOR <= h <= common.MAX_SIDE and FACTOR <= w <= common.MAX_SIDE and mode in ("L", "RGB")
                and ent in ("p", "u") and classes == self.classes and len(payloads) == 3):
            raise BitstreamError(f"bitstream metadata is invalid: {meta}")
        if stream_numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {stream_numerics} numerics and this process computes with "
                f"{self.numerics}: the generator's pixels would differ from the encoder's. " + common.NUMERICS_HELP)
        if any(len(p) % 4 for p in payloads):
            raise BitstreamError("bitstream payload is not a whole number of 32-bit words")
        words = [np.frombuffer(p, dtype=np.uint32) for p in payloads]
        lh, lw = self.latent_shape(h, w)
        try:
            semantic = decode_label_map(words[0], (h, w), self.classes)
            heatmap = decode_label_map(words[1], (lh, lw), 2).astype(np.uint8)
            count = int(heatmap.sum())
            if ent == "p":
                flat = decode_categorical(words[2], np.tile(self.pmfs, (count, 1)))
            else:
                flat = decode_uniform(words[2], count * self.spec.channels, LEVELS)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
        symbols = np.full((lh, lw, self.spec.channels), ZERO_SYMBOL, np.int32)
        symbols[heatmap.astype(bool)] = flat.reshape(count, self.spec.channels)
        image = self.synthesise(symbols, heatmap, semantic, seed=zlib.crc32(b"".join(payloads)))
        image = common.as_mode(image, mode == "L")
        if zlib.crc32(np.ascontiguousarray(image).tobytes()) != crc:
            raise BitstreamError("decoded image does not match the encoder's checksum: the model computed "
                                 "different values here than when compressing (different platform or jaxlib?)")
        return (image, semantic, heatmap) if maps else image


def load_sc_codec(checkpoint: str) -> SCCodec:
    """An :class:`SCCodec` from an exported ``.msgpack`` or a training workdir of an SC model
    (``config.task = "gc"`` with ``model.semantic_classes > 0``)."""
    from jaxcomp.modelfile import ModelLoadError

    _, spec, params = load_gc_model(checkpoint)
    if not spec.semantic_classes:
        raise ModelLoadError(f"{checkpoint}: a global (GC) model, not a selective one; use --codec gc")
    return SCCodec(spec, params["generator"])
