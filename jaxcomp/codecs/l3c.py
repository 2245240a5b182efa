"""L3C: Practical Full Resolution Learned Lossless Image Compression (Mentzer et al., CVPR'19).

The image ``x = x(0)`` (``uint8 [B, H, W, 3]``) is encoded into a hierarchy of quantized
auxiliary representations ``z(1), ..., z(S)``, each at half the resolution of the one
before. Decoder ``D(s)`` sees ``z(s)`` and the features of ``D(s+1)`` and predicts a
discretized logistic mixture for every symbol of ``x(s-1)`` (``z(s-1)``, or the RGB image at
``s = 1``). ``z(S)`` is coded with a uniform prior. The loss is the total number of bits
divided by the number of subpixels ``3HW`` (bits per subpixel, bpsp).

Shapes: with ``S`` scales, ``H`` and ``W`` must be multiples of ``2**S``; ``z(s)`` is
``[B, H/2^s, W/2^s, C]`` with values on ``levels`` points in ``[-1, 1]``.

Variants (``config.model.representation``):
  * ``"learned"`` — the paper's model: encoders ``E(s)`` learn ``z(s)``;
  * ``"rgb"`` — the paper's "RGB" baseline: ``x(s)`` is a bicubic x2 downscaling of
    ``x(s-1)`` rounded to 8 bits, so every scale is an RGB image (``share_weights`` gives
    "RGB Shared": one decoder for all scales).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.codecs.common import NUMERICS_HELP, check_image, numerics
from jaxcomp.entropy import logistic_mixture as lm
from jaxcomp.nn import AtrousHead, Conv, ResBody, pixel_shuffle
from jaxcomp.quantize import soft_hard_quantize, uniform_levels
from jaxcomp.train import TrainState, make_optimizer

RGB_LEVELS = 256
# Coding PMFs cover 64 levels around the mixture mean plus an escape: 4x fewer CDF evaluations
# than all 256, for +0.1-0.2% bits on photos (experiments/bench_codecs.py --windows measures it).
DEFAULT_WINDOW = 64


@dataclasses.dataclass(frozen=True)
class L3CSpec:
    """The architecture; built from ``config.model`` by :func:`spec_from_config`."""

    scales: int = 3
    features: int = 64          # Cf
    blocks: int = 8             # residual blocks per encoder / decoder
    latent_channels: int = 5    # C
    levels: int = 25            # L
    sigma: float = 2.0          # softness of the quantizer
    mixtures: int = 10          # K
    representation: str = "learned"
    share_weights: bool = False

    def __post_init__(self):
        if self.representation not in ("learned", "rgb"):
            raise ValueError(f"model.representation must be 'learned' or 'rgb', not {self.representation!r}")
        if self.share_weights and self.representation != "rgb":
            raise ValueError("model.share_weights is defined for the 'rgb' representation only")
        if self.scales < 1:
            raise ValueError(f"model.scales must be >= 1, got {self.scales}")

    def channels(self, s: int) -> int:
        """Channels of ``x(s)`` (``s = 0`` is the image)."""
        return 3 if s == 0 or self.representation == "rgb" else self.latent_channels

    def num_levels(self, s: int) -> int:
        return RGB_LEVELS if s == 0 or self.representation == "rgb" else self.levels


def spec_from_config(model: ml_collections.ConfigDict) -> L3CSpec:
    return L3CSpec(**model.to_dict())


def image_to_unit(x: jax.Array) -> jax.Array:
    """``uint8/float [0, 255] -> float32 [-1, 1]``, the grid of the 256 RGB levels."""
    return x.astype(jnp.float32) / 127.5 - 1.0


class Encoder(nn.Module):
    """E(s): 5x5 stride-2 conv, residual body with global skip, 1x1 conv, quantizer."""

    spec: L3CSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns ``(features [B,h,w,Cf], z_hat [B,h,w,C], symbols int32 [B,h,w,C])``."""
        s = self.spec
        h = Conv(s.features, (5, 5), strides=(2, 2), padding=((2, 2), (2, 2)), name="head")(x)
        h = ResBody(s.features, s.blocks, name="body")(h)
        z = Conv(s.latent_channels, (1, 1), name="tail")(h)
        z_hat, symbols = soft_hard_quantize(z, uniform_levels(s.levels), s.sigma)
        return h, z_hat, symbols


class Decoder(nn.Module):
    """D(s): 1x1 head, fusion with coarser features, residual body, x2 pixel-shuffle, atrous head."""

    spec: L3CSpec
    out_channels: int

    @nn.compact
    def __call__(self, z: jax.Array, coarser: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Returns ``(features [B,2h,2w,Cf], mixture parameters [B,2h,2w,P])``."""
        s = self.spec
        h = Conv(s.features, (1, 1), name="head")(z)
        if coarser is not None:
            h = h + coarser
        h = ResBody(s.features, s.blocks, name="body")(h)
        h = Conv(4 * s.features, (3, 3), name="upsample")(h)
        f = pixel_shuffle(h, 2)
        autoregressive = self.out_channels == 3
        p = lm.num_mixture_params(self.out_channels, s.mixtures, autoregressive)
        return f, AtrousHead(s.features, p, name="probability")(f)


def rgb_pyramid(x: jax.Array, scales: int) -> list[jax.Array]:
    """Bicubic (antialiased) x2 downscalings rounded to 8 bits: ``[x(0), ..., x(S)]`` in [0, 255]."""
    out = [x.astype(jnp.float32)]
    for _ in range(scales):
        prev = out[-1]
        b, h, w, c = prev.shape
        small = jax.image.resize(prev, (b, h // 2, w // 2, c), "bicubic", antialias=True)
        out.append(jnp.clip(jnp.round(small), 0, 255))
    return out


class L3C(nn.Module):
    """The multiscale model. ``__call__`` returns what the loss and the coder need."""

    spec: L3CSpec

    def setup(self):
        s = self.spec
        if s.representation == "learned":
            self.encoders = [Encoder(s, name=f"E{i + 1}") for i in range(s.scales)]
        n_dec = 1 if s.share_weights else s.scales
        self.decoders = [Decoder(s, s.channels(i), name=f"D{i + 1}") for i in range(n_dec)]

    def decoder(self, scale: int) -> Decoder:
        """D(scale) for ``scale`` in ``1..S``."""
        return self.decoders[0 if self.spec.share_weights else scale - 1]

    def representations(self, x: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
        """``x(0..S)`` as decoder inputs on the unit grid, and their symbols (int32).

        ``x(0)`` is the image mapped to ``[-1, 1]``; symbols of RGB scales are 0..255.
        """
        s = self.spec
        if s.representation == "rgb":
            pyramid = rgb_pyramid(x, s.scales)
            return [image_to_unit(p) for p in pyramid], [p.astype(jnp.int32) for p in pyramid]
        values, symbols = [image_to_unit(x)], [x.astype(jnp.int32)]
        features = values[0]
        for encoder in self.encoders:
            features, z_hat, sym = encoder(features)
            values.append(z_hat)
            symbols.append(sym)
        return values, symbols

    def predict(self, z: jax.Array, coarser: jax.Array | None, scale: int) -> tuple[jax.Array, jax.Array]:
        """D(scale) on ``z(scale)``: ``(features, raw mixture parameters for x(scale-1))``."""
        return self.decoder(scale)(z, coarser)

    def __call__(self, x: jax.Array) -> dict[str, Any]:
        """Forward pass for training.

        Args:
          x: ``uint8 [B, H, W, 3]`` (or float in [0, 255]); H, W multiples of ``2**S``.

        Returns:
          dict with ``values``/``symbols`` (lists over scales 0..S) and ``params``: raw
          mixture parameters ``[B, H/2^s, W/2^s, P]`` predicting ``x(s)``, for s = 0..S-1.
        """
        s = self.spec
        values, symbols = self.representations(x)
        params: list[jax.Array | None] = [None] * s.scales
        coarser = None
        for scale in range(s.scales, 0, -1):
            coarser, params[scale - 1] = self.predict(values[scale], coarser, scale)
        return {"values": values, "symbols": symbols, "params": params}


def mixture_params(spec: L3CSpec, raw: jax.Array, scale: int, channels_first: bool = False) -> lm.MixtureParams:
    """Mixture parameters for ``x(scale)`` from the raw output of ``D(scale+1)`` (``[B, h, w, P]``,
    or ``[P, B, h, w]`` with ``channels_first``)."""
    c = spec.channels(scale)
    return lm.split_mixture_params(raw, c, spec.mixtures, autoregressive=(c == 3), channels_first=channels_first)


def bits_per_scale(spec: L3CSpec, out: dict[str, Any]) -> list[jax.Array]:
    """Bits of each representation ``x(0..S)`` per example, each ``float32 [B]``.

    Computed channels-first (``[P, B, H, W]`` parameters, see ``lm.mixture_log_prob``): the
    same numbers as in the NHWC layout (a test checks values and gradients), but in NHWC the
    minor dimension is the K=10 mixture components, which XLA's CPU backend vectorises
    poorly. For a cpu_rgb batch (16 x 64x64) the mixture part of loss + gradient went from
    0.87 to 0.49 s, the whole training step (``experiments/bench_train.py``) from 2.17-2.22 to
    2.07-2.09 s, both measured while a training run shared the 2 cores.
    """
    bits = []
    for scale in range(spec.scales):
        p = mixture_params(spec, jnp.moveaxis(out["params"][scale], -1, 0), scale, channels_first=True)
        x = jnp.moveaxis(out["values"][scale], -1, 0)
        logp = lm.mixture_log_prob(p, x, spec.num_levels(scale), channels_first=True)  # [C, B, H, W]
        bits.append(-jnp.sum(logp, axis=(0, 2, 3)) / np.log(2.0))
    top = out["values"][spec.scales]
    n_top = np.prod(top.shape[1:])
    bits.append(jnp.full((top.shape[0],), n_top * np.log2(spec.num_levels(spec.scales)), jnp.float32))
    return bits


def bpsp_metrics(spec: L3CSpec, out: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, jax.Array]:
    """Per-example ``bpsp`` and ``bpsp_s{s}`` (bits of scale s per subpixel of the image), ``[B]``."""
    subpixels = float(np.prod(image_shape[1:]))
    bits = bits_per_scale(spec, out)
    metrics = {f"bpsp_s{s}": b / subpixels for s, b in enumerate(bits)}
    metrics["bpsp"] = sum(bits) / subpixels
    return metrics


class L3CTask:
    """The trainer's task for L3C: pure init / train_step / eval_step."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.model = L3C(self.spec)
        self.tx, self.schedule = make_optimizer(config.optimizer)

    def check_batch(self, image_shape: tuple[int, ...]) -> None:
        m = 2 ** self.spec.scales
        if len(image_shape) != 4 or image_shape[-1] != 3:
            raise ValueError(f"L3C expects images [B, H, W, 3], got shape {image_shape}")
        if image_shape[1] % m or image_shape[2] % m:
            raise ValueError(f"L3C with {self.spec.scales} scales needs H and W divisible by {m}, "
                             f"got {image_shape[1]}x{image_shape[2]}")

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
        self.check_batch(batch["image"].shape)
        params = self.model.init(rng, batch["image"][:1])["params"]
        return TrainState.create(params, self.tx)

    def loss(self, params: Any, image: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        out = self.model.apply({"params": params}, image)
        metrics = {k: jnp.mean(v) for k, v in bpsp_metrics(self.spec, out, image.shape).items()}
        return metrics["bpsp"], metrics

    def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        del rng  # L3C training is deterministic given the batch
        (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch["image"])
        metrics["learning_rate"] = self.schedule(state.step)
        return state.apply_gradients(grads), metrics

    def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        out = self.model.apply({"params": state.params}, batch["image"])
        return bpsp_metrics(self.spec, out, batch["image"].shape)


# --------------------------------------------------------------------------------------
# Entropy coding: real bitstreams (host side, built on jaxcomp.coding)
# --------------------------------------------------------------------------------------


class _CodecFunctions:
    """The jitted functions shared by encoder and decoder, functions of (params, inputs) only.

    One per :class:`L3CSpec` (:func:`_codec_functions`), so codecs of the same architecture
    (another checkpoint, tile size or window; a codec loaded again by each command) reuse
    the compiled code instead of compiling it again.
    """

    def __init__(self, spec: L3CSpec):
        self.spec, self.model = spec, L3C(spec)
        self.symbols = jax.jit(self._symbols_fn)
        self.decode_scale = jax.jit(self._decode_scale_fn, static_argnums=(3,))
        self.scale_pmf = jax.jit(self._scale_pmf_fn, static_argnums=(2, 3, 4))
        self.forward = jax.jit(lambda params, x: self.model.apply({"params": params}, x))

    def _symbols_fn(self, params, x):
        return self.model.apply({"params": params}, x, method=L3C.representations)[1]

    def _values(self, symbols: jax.Array, scale: int) -> jax.Array:
        if self.spec.num_levels(scale) == RGB_LEVELS:
            return symbols.astype(jnp.float32) / 127.5 - 1.0
        return uniform_levels(self.spec.levels)[symbols]

    def _decode_scale_fn(self, params, symbols, coarser, scale):
        z = self._values(symbols, scale)
        return self.model.apply({"params": params}, z, coarser, scale, method=L3C.predict)

    def _scale_pmf_fn(self, raw, symbols, scale, channel, window):
        """PMFs ``[N, levels]`` of x(scale) (one channel of RGB, all channels otherwise), or
        with a window, ``([N, window + 1], lo [N])`` (see :func:`lm.mixture_pmf_window`)."""
        p = mixture_params(self.spec, raw, scale)
        levels = self.spec.num_levels(scale)
        values = self._values(symbols, scale) if p.coeffs is not None else None
        ch = channel if p.coeffs is not None else None
        if window:
            pmf, lo = lm.mixture_pmf_window(p, values, levels, window, channel=ch)
            return pmf.reshape(-1, window + 1), lo.reshape(-1)
        return lm.mixture_pmf(p, values, levels, channel=ch).reshape(-1, levels), None


@functools.lru_cache(maxsize=8)
def _codec_functions(spec: L3CSpec) -> _CodecFunctions:
    return _CodecFunctions(spec)


class L3CCodec:
    """Lossless compression of ``uint8`` images with a trained L3C model.

    ``compress(image) -> bytes`` and ``decompress(bytes) -> image``. Images are cut into
    tiles of at most ``tile x tile`` pixels that are coded independently (memory stays
    bounded for any image size; full tiles share one compiled shape). Each tile is padded
    by edge replication to a multiple of ``2**scales``; very small images work the same way.
    ``window`` > 0 codes each 256-level subpixel with a PMF over ``window`` levels around the
    mixture's mean plus an escape bin (:func:`jaxcomp.entropy.mixture_pmf_window`); 0 codes
    with PMFs over all levels. The stream records its window, so any codec decodes it.

    Bit-exactness: the decoder computes every PMF with the jitted functions below, on
    inputs rebuilt from decoded symbols; the encoder calls the *same* functions on the
    *same* inputs (not the fused training forward pass), so both see identical floats.
    The container stores a CRC of the pixels, and a decode that does not reproduce them
    (e.g. a model run on a platform with different numerics) raises instead of returning
    a wrong image.
    """

    codec_name = "l3c"

    def __init__(self, spec: L3CSpec, params: Any, tile: int = 512, window: int = DEFAULT_WINDOW):
        from jaxcomp.coding import fingerprint

        m = 2**spec.scales
        if tile % m or tile <= 0:
            raise ValueError(f"tile must be a positive multiple of {m}, got {tile}")
        if window < 0:
            raise ValueError(f"window must be >= 0 (0: PMFs over all levels), got {window}")
        self.spec, self.tile, self.window = spec, tile, window
        self.params = jax.tree.map(jnp.asarray, params)
        fns = _codec_functions(spec)  # compiled once per architecture, for every codec of it
        self.model = fns.model
        self.fingerprint = fingerprint(self.params, dataclasses.asdict(spec))
        self.numerics = numerics()
        self._symbols, self._decode_scale, self._scale_pmf = fns.symbols, fns.decode_scale, fns.scale_pmf
        self._forward = fns.forward  # estimates only

    def _window(self, scale: int, window: int) -> int:
        """The window a stream coded with ``window`` uses at ``scale`` (0: all levels)."""
        return window if 0 < window < self.spec.num_levels(scale) else 0

    def _pmfs(self, raw, symbols: np.ndarray, scale: int, channel: int, window: int):
        pmf, lo = self._scale_pmf(raw, jnp.asarray(symbols), scale, channel, self._window(scale, window))
        return np.asarray(pmf), None if lo is None else np.asarray(lo)

    def _encode(self, symbols: np.ndarray, pmf: np.ndarray, lo: np.ndarray | None, scale: int,
                with_bits: bool = True) -> tuple[bytes, np.ndarray | None]:
        """One payload and (``with_bits``) the per-symbol information content ``float64 [N]`` in bits."""
        from jaxcomp.coding import encode_categorical, encode_windowed, ideal_bits_windowed, information_content

        symbols = symbols.reshape(-1)
        if lo is None:
            data = encode_categorical(symbols, pmf).tobytes()
            if not with_bits:
                return data, None
            return data, information_content(symbols, pmf)
        levels = self.spec.num_levels(scale)
        data = encode_windowed(symbols, pmf, lo, levels).tobytes()
        return data, ideal_bits_windowed(symbols, pmf, lo, levels) if with_bits else None

    def _decode(self, words: np.ndarray, pmf: np.ndarray, lo: np.ndarray | None, scale: int) -> np.ndarray:
        from jaxcomp.coding import decode_categorical, decode_windowed

        if lo is None:
            return decode_categorical(words, pmf)
        return decode_windowed(words, pmf, lo, self.spec.num_levels(scale))

    # ---- tiles ------------------------------------------------------------------------

    def _tiles(self, h: int, w: int, tile: int | None = None) -> list[tuple[int, int, int, int]]:
        tile = tile or self.tile
        return [(y, x, min(tile, h - y), min(tile, w - x)) for y in range(0, h, tile) for x in range(0, w, tile)]

    def _pad(self, tile: np.ndarray) -> np.ndarray:
        m = 2**self.spec.scales
        h, w = tile.shape[:2]
        return np.pad(tile, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")

    @staticmethod
    def _partial(symbols: np.ndarray, channel: int) -> np.ndarray:
        """RGB symbols with the channels from ``channel`` on zeroed (what the decoder has)."""
        out = np.zeros_like(symbols)
        out[..., :channel] = symbols[..., :channel]
        return out

    def _encode_tile(self, tile: np.ndarray, bit_maps: dict | None = None,
                     with_bits: bool = True) -> tuple[list[bytes], float]:
        from jaxcomp.coding import encode_uniform

        s = self.spec
        names = self.payload_names()
        symbols = [np.asarray(v) for v in self._symbols(self.params, jnp.asarray(self._pad(tile))[None])]
        payloads = [encode_uniform(symbols[s.scales], s.num_levels(s.scales)).tobytes()]
        bits = len(payloads[0]) * 8.0

        def pmf_jobs():
            """Dispatches each payload's PMFs (asynchronously: JAX returns before computing)."""
            coarser = None
            for scale in range(s.scales, 0, -1):
                coarser, raw = self._decode_scale(self.params, jnp.asarray(symbols[scale]), coarser, scale)
                target = symbols[scale - 1]
                rgb = s.channels(scale - 1) == 3
                for c in range(3 if rgb else 1):
                    inputs = jnp.asarray(self._partial(target, c) if rgb else target)
                    pmf_lo = self._scale_pmf(raw, inputs, scale - 1, c, self._window(scale - 1, self.window))
                    yield scale - 1, target[..., c] if rgb else target, pmf_lo

        def code(scale, part, pmf_lo):
            nonlocal bits
            pmf, lo = pmf_lo
            data, symbol_bits = self._encode(part, np.asarray(pmf), None if lo is None else np.asarray(lo), scale,
                                             with_bits or bit_maps is not None)
            payloads.append(data)
            if symbol_bits is not None:
                bits += float(symbol_bits.sum())
                if bit_maps is not None:
                    bit_maps[names[len(payloads) - 1]] = symbol_bits.astype(np.float32).reshape(part.shape[1:])

        # The encoder knows every symbol, so the next payload's PMFs compute while this one is coded.
        pending: collections.deque = collections.deque()
        for job in pmf_jobs():
            pending.append(job)
            if len(pending) == 2:
                code(*pending.popleft())
        while pending:
            code(*pending.popleft())
        return payloads, bits

    def _decode_tile(self, payloads: list[bytes], h: int, w: int, window: int) -> np.ndarray:
        from jaxcomp.coding import decode_uniform

        s = self.spec
        m = 2**s.scales
        ph, pw = h + (-h % m), w + (-w % m)
        words = [np.frombuffer(p, dtype=np.uint32) if len(p) % 4 == 0 else None for p in payloads]
        if any(x is None for x in words):
            from jaxcomp.coding import BitstreamError
            raise BitstreamError("bitstream payload has a length that is not a multiple of 4 bytes")
        top_shape = (1, ph // 2**s.scales, pw // 2**s.scales, s.channels(s.scales))
        symbols = decode_uniform(words[0], int(np.prod(top_shape)), s.num_levels(s.scales)).reshape(top_shape)
        k = 1
        coarser = None
        for scale in range(s.scales, 0, -1):
            coarser, raw = self._decode_scale(self.params, jnp.asarray(symbols), coarser, scale)
            shape = (1, ph // 2 ** (scale - 1), pw // 2 ** (scale - 1), s.channels(scale - 1))
            target = np.zeros(shape, np.int32)
            rgb = shape[-1] == 3
            for c in range(3 if rgb else 1):
                pmf, lo = self._pmfs(raw, target, scale - 1, c, window)
                decoded = self._decode(words[k], pmf, lo, scale - 1)
                if rgb:
                    target[..., c] = decoded.reshape(shape[:3])
                else:
                    target = decoded.reshape(shape)
                k += 1
            symbols = target
        return symbols[0, :h, :w].astype(np.uint8)

    def payload_names(self) -> list[str]:
        """What each payload of a tile holds, in stream order (coarsest first)."""
        s = self.spec
        names = [f"x({s.scales}) uniform"]
        for scale in range(s.scales - 1, -1, -1):
            names += [f"x({scale}) {c}" for c in "RGB"] if s.channels(scale) == 3 else [f"x({scale})"]
        return names

    def payloads_per_tile(self) -> int:
        return len(self.payload_names())

    def bit_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Per-symbol costs ``-log2 p`` under the coding PMFs, by payload name.

        Each map is ``float32 [h_s, w_s]`` (RGB channels) or ``[h_s, w_s, C]`` (latents) of
        the padded image; ``image`` must fit in one tile.
        """
        image = check_image(image, "L3C")
        rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
        if max(rgb.shape[:2]) > self.tile:
            raise ValueError(f"bit_maps works on one tile (at most {self.tile}px a side), got {rgb.shape[:2]}")
        maps: dict[str, np.ndarray] = {}
        self._encode_tile(rgb, maps)
        return maps

    # ---- public API -------------------------------------------------------------------

    def compress(self, image: np.ndarray, return_bits: bool = False):
        """``uint8 [H, W, 3]`` (or ``[H, W]`` grayscale) -> bitstream ``bytes``.

        With ``return_bits``, also returns the ideal information content (bits) of the coded
        symbols under the model's PMFs, for checking the coder's overhead.
        """
        import zlib

        from jaxcomp.coding import pack

        image = check_image(image, "L3C")
        mode = "L" if image.ndim == 2 else "RGB"
        rgb = np.repeat(image[..., None], 3, -1) if mode == "L" else image
        h, w = rgb.shape[:2]
        payloads, bits = [], 0.0
        for y, x, th, tw in self._tiles(h, w):
            p, b = self._encode_tile(rgb[y:y + th, x:x + tw], with_bits=return_bits)
            payloads += p
            bits += b
        meta = dict(height=h, width=w, mode=mode, tile=self.tile, window=self.window, numerics=self.numerics,
                    pixel_crc=zlib.crc32(image.tobytes()))
        data = pack(self.codec_name, self.fingerprint, meta, payloads)
        return (data, bits) if return_bits else data

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` if the input was grayscale).

        Raises:
          jaxcomp.coding.BitstreamError: not a bitstream of this codec and model, truncated,
            corrupt, or decoding does not reproduce the encoder's pixel checksum.
        """
        import zlib

        from jaxcomp.coding import BitstreamError, CodingError, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, tile, mode, crc = (int(meta["height"]), int(meta["width"]), int(meta["tile"]), meta["mode"],
                                     int(meta["pixel_crc"]))
            window = int(meta.get("window", 0))  # streams written before windows existed code all levels
            stream_numerics = str(meta.get("numerics", "cpu/ynn"))  # ... and ran jaxlib's default convs
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"bitstream metadata is incomplete: {e}") from e
        m = 2**self.spec.scales
        if not (0 < h <= 1 << 16 and 0 < w <= 1 << 16 and 0 < tile <= 1 << 14 and tile % m == 0
                and 0 <= window <= RGB_LEVELS and mode in ("L", "RGB")):
            raise BitstreamError(f"bitstream metadata is invalid: {meta}")
        if stream_numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {stream_numerics} numerics and this process computes with "
                f"{self.numerics}: the model's probabilities would differ, so it cannot be decoded here. "
                + NUMERICS_HELP)
        tiles = self._tiles(h, w, tile)  # the tiling is a property of the stream, not of this codec
        per_tile = self.payloads_per_tile()
        if len(payloads) != per_tile * len(tiles):
            raise BitstreamError(f"bitstream has {len(payloads)} payloads, expected {per_tile * len(tiles)}")
        out = np.zeros((h, w, 3), np.uint8)
        try:
            for i, (y, x, th, tw) in enumerate(tiles):
                out[y:y + th, x:x + tw] = self._decode_tile(payloads[i * per_tile:(i + 1) * per_tile], th, tw, window)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
        image = out[..., 0] if mode == "L" else out
        if zlib.crc32(np.ascontiguousarray(image).tobytes()) != crc:
            raise BitstreamError("decoded pixels do not match the encoder's checksum: the model computed different "
                                 "probabilities here than when compressing (different platform or jaxlib?)")
        return image

    def estimate_bits(self, image: np.ndarray) -> float:
        """Cross-entropy (training-loss) estimate of the bits :meth:`compress` spends."""
        image = check_image(image, "L3C")
        rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
        h, w = rgb.shape[:2]
        total = 0.0
        for y, x, th, tw in self._tiles(h, w):
            x_in = jnp.asarray(self._pad(rgb[y:y + th, x:x + tw]))[None]
            out = self._forward(self.params, x_in)
            total += float(sum(b[0] for b in bits_per_scale(self.spec, out)))
        return total


def load_codec(checkpoint: str | None = None, tile: int = 512, window: int = DEFAULT_WINDOW) -> L3CCodec:
    """An :class:`L3CCodec` from the shipped model (default), an exported ``.msgpack`` or a workdir."""
    from jaxcomp.codecs.pretrained import DEFAULT_L3C
    from jaxcomp.modelfile import load_model

    config, params, _ = load_model(checkpoint or DEFAULT_L3C, task="l3c")
    return L3CCodec(spec_from_config(config.model), params, tile=tile, window=window)
