"""The context-model codec: real bitstreams from a trained model (:class:`CPMCodec`).

Symbols are decoded in *wavefronts* ``t = 4c + 2y + x``: every symbol of a wavefront depends only
on earlier wavefronts (:func:`jaxcomp.codecs.cpm.model.wavefronts`), so each is one jitted step
that evaluates the context model only at the wavefront's positions, reusing cached activations of
earlier ones. The encoder runs the very same steps on the same inputs, so both sides see
identical floats and decoding is exact. Encoder-side latent refinement (:meth:`CPMCodec.refine`)
changes only which symbols are sent.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.checks import is_whole
from jaxcomp.codecs import common
from jaxcomp.codecs.cpm.model import (
    CPM,
    FACTOR,
    KMAP_SCALE,
    CPMSpec,
    check_model_params,
    context_masks,
    expected_symbol_bits,
    kmap_bits,
    rate_terms,
    rd_objective,
    spec_from_config,
    symbol_bits,
    unmasked_count,
    wavefronts,
)
from jaxcomp.codecs.cpm.task import objective_weights
from jaxcomp.metrics import ms_ssim, mse

MAX_TILE = 1 << 15  # the largest tile a stream's header admits
MIN_REFINE = 16  # latent refinement needs images of at least this many pixels a side (MS-SSIM's 5 scales)


def _context_step(cparams: dict, state: tuple, prev_flat: jax.Array, prev_values: jax.Array,
                  cur_flat: jax.Array, offsets: jax.Array) -> tuple[tuple, jax.Array]:
    """One wavefront of the context model on flattened padded volumes.

    ``state = (values [N], a0 [N, K], a1 [N, K], a2 [N, K])``: symbol values (the pad value
    outside the volume) and cached activations (0 outside). Writes the previous wavefront's
    decoded values, then evaluates every layer at ``cur_flat`` (``int32 [M]``, entries
    ``>= N`` are padding) and returns the PMFs ``float32 [M, L]``.
    """
    values, a0, a1, a2 = state
    values = values.at[prev_flat].set(prev_values, mode="drop")
    first, other = context_masks()
    nb = cur_flat[:, None] + offsets[None, :]  # [M, 18]

    def layer(src, name, mask):
        kernel = cparams[f"{name}_kernel"] * mask[..., None, None]
        kernel = kernel.reshape(18, kernel.shape[-2], kernel.shape[-1])
        gathered = jnp.take(src, nb, axis=0, mode="clip")
        if gathered.ndim == 2:
            gathered = gathered[..., None]
        return jnp.einsum("mfi,fio->mo", gathered, kernel) + cparams[f"{name}_bias"]

    h0 = nn.relu(layer(values, "conv0", first))
    a0 = a0.at[cur_flat].set(h0, mode="drop")
    h1 = nn.relu(layer(a0, "res1", other))
    a1 = a1.at[cur_flat].set(h1, mode="drop")
    h2 = h0 + layer(a1, "res2", other)
    a2 = a2.at[cur_flat].set(h2, mode="drop")
    logits = layer(a2, "out", other)
    return (values, a0, a1, a2), jax.nn.softmax(logits, axis=-1)



# --------------------------------------------------------------------------------------
# Entropy coding: real bitstreams
# --------------------------------------------------------------------------------------

_NB_OFFSETS = [(dc, dy, dx) for dc in (-1, 0) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


class _TilePlan:
    """Wavefront positions of one latent tile ``[C, h, w]`` as flat indices into padded volumes."""

    def __init__(self, channels: int, h: int, w: int):
        self.shape = (channels, h, w)
        self.padded = (channels + 1, h + 2, w + 2)
        self.size = int(np.prod(self.padded))
        ph, pw = self.padded[1], self.padded[2]
        self.offsets = np.array([dc * ph * pw + dy * pw + dx for dc, dy, dx in _NB_OFFSETS], np.int32)
        self.fronts = wavefronts(channels, h, w)
        self.width = max(len(f) for f in self.fronts)
        self.flat = []  # int32 [M] per wavefront, padded with self.size (out of range: dropped)
        for f in self.fronts:
            flat = np.full((self.width,), self.size, np.int32)
            flat[: len(f)] = ((f[:, 0] + 1) * ph + f[:, 1] + 1) * pw + f[:, 2] + 1
            self.flat.append(flat)
        self.flat_device = [jnp.asarray(f) for f in self.flat]  # uploaded once per tile shape, not per call


@functools.lru_cache(maxsize=8)
def _codec_functions(spec: CPMSpec) -> tuple[CPM, Any, Any, Any]:
    """The model and its jitted ``(encode, decode, context_logits)`` of ``(params, inputs)`` for one
    architecture."""
    model = CPM(spec, subpixel_decoder=False)  # the synthesis the streams' checksums were written with
    return (model, jax.jit(lambda p, x: model.apply({"params": p}, x, method=CPM.encode)),
            jax.jit(lambda p, q: model.apply({"params": p}, q, method=CPM.decode)),
            jax.jit(lambda p, q: model.apply({"params": p}, q, method=CPM.context_logits)))


@functools.lru_cache(maxsize=8)
def _refine_functions(spec: CPMSpec) -> tuple[Any, Any, Any]:
    """Jitted ``(latent, bottleneck, step)`` of one architecture for :meth:`CPMCodec.refine`.

    ``step(params, weights, lr, z, adam_state, x) -> (z', adam_state', objective, (MS-SSIM, H))``:
    one Adam step on the encoder's raw output ``z [1, h, w, C + 1]`` for the image
    ``x float32 [1, H, W, 3]``, minimising the training objective (:func:`rd_objective`) with the
    parameters fixed; ``objective`` is that of ``z`` before the step. Computed with the training
    formulation (sub-pixel synthesis); only the symbols it settles on matter to the codec.
    """
    import optax

    model = CPM(spec, subpixel_decoder=True)
    adam = optax.scale_by_adam()

    def objective(params, w, z, x):
        out = model.apply({"params": params}, z, method=CPM.bottleneck)
        x_hat = model.apply({"params": params}, out["q"], method=CPM.decode)
        out["logits"] = model.apply({"params": params}, out["q"], method=CPM.context_logits)
        out["kmap_logits"] = KMAP_SCALE * params["kmap_logits"]
        bc = expected_symbol_bits(out["logits"], out["z"], out["symbols"], params["centers"], spec.sigma)
        H = rate_terms(spec, out, bc)["H_soft"]
        ms = ms_ssim(x, x_hat)
        distortion, rate_penalty = rd_objective(w, ms, mse(x, x_hat), H)
        return distortion + rate_penalty, (ms[0], H[0])

    def step(params, w, lr, z, state, x):
        (value, aux), grad = jax.value_and_grad(objective, argnums=2, has_aux=True)(params, w, z, x)
        update, state = adam.update(grad, state)
        return z - lr * update, state, value, aux

    return (jax.jit(lambda p, x: model.apply({"params": p}, x, method=CPM.latent)),
            jax.jit(lambda p, z: model.apply({"params": p}, z, method=CPM.bottleneck)),
            jax.jit(step))


def _check_refinement(steps: int, lr: float, objective: dict | None) -> None:
    """ValueError unless ``steps`` >= 0, ``lr`` > 0 and, for ``steps`` > 0, an ``objective`` is given."""
    if not is_whole(steps):
        raise ValueError(f"refine must be a whole number of steps, got {steps!r}")
    if steps < 0 or not lr > 0:
        raise ValueError(f"refine must be >= 0 steps and refine_lr > 0, got {steps} and {lr}")
    if steps and objective is None:
        raise ValueError("refine needs the model's training objective (objective_weights(config.loss))")


_CONTEXT_STEP = jax.jit(_context_step, donate_argnums=(1,))
_KMAP_TABLE = jax.jit(lambda p: jax.nn.softmax(KMAP_SCALE * p["kmap_logits"], -1))


@common.in_fixed_numerics
class CPMCodec:
    """Lossy compression of ``uint8`` images with a trained context-model codec.

    ``compress(image) -> bytes``, ``decompress(bytes) -> image``, ``reconstruct(image)`` (what
    decompress returns, computed without coding) and ``estimate_bits(image)`` (cross-entropy).
    The autoencoder runs on the whole image (padded by edge replication to a multiple of 8);
    the latent is coded in tiles of at most ``tile x tile`` *pixels* (``tile / 8`` latent
    positions a side), each an independent stream (bounded memory for the wavefront caches).
    The container's metadata is kept to a few dozen bytes: at 0.2 bpp a 768x512 image is only
    ~10 kB.

    ``refine``: steps of encoder-side latent refinement (:meth:`refine`; 0: the encoder's
    output as it is). It needs ``objective`` (:func:`objective_weights` of the model's training
    config; :func:`load_codec` passes it). Refinement changes only which symbols are sent: the
    decoder, the format and decoding time are the same, and any codec of the model decodes the file.
    The last image analysed is remembered (by its bytes), so ``compress``, ``reconstruct``,
    ``estimate_bits`` and ``bit_map`` of one image refine it once.
    """

    codec_name = "cpm"

    def __init__(self, spec: CPMSpec, params: Any, tile: int = 1024, refine: int = 0,
                 objective: dict[str, float] | None = None, refine_lr: float = 0.1, progress: bool = False):
        from jaxcomp.coding import fingerprint

        tile = common.check_tile(tile, FACTOR, MAX_TILE)
        _check_refinement(refine, refine_lr, objective)
        self.refine_steps, self.refine_lr, self.progress = refine, refine_lr, progress
        self.objective = None if objective is None else {k: float(v) for k, v in objective.items()}
        self._memo: tuple[tuple, tuple[np.ndarray, np.ndarray]] | None = None
        self.refine_trace: list[tuple[float, float, float]] = []  # of the last image refined (refine's trace)
        self.spec, self.tile = spec, tile
        self.params = jax.tree.map(jnp.asarray, params)
        self.fingerprint = fingerprint(self.params, dataclasses.asdict(spec))
        self.numerics = common.numerics()
        centers = np.asarray(self.params["centers"], np.float32)
        self.centers = centers
        self.zero_symbol = int(np.argmin(np.abs(centers)))  # what a masked symbol quantizes to
        # compiled once per architecture, shared by every codec of it (another checkpoint, a reload)
        self.model, self._encode_fn, self._decode_fn, self._logits_fn = _codec_functions(spec)
        self._step = _CONTEXT_STEP
        self.kmap_table = np.asarray(_KMAP_TABLE(self.params))
        self._plans: dict[tuple[int, int], _TilePlan] = {}

    # ---- the bottleneck --------------------------------------------------------------

    def _pad(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.pad(image, ((0, -h % FACTOR), (0, -w % FACTOR), (0, 0)), mode="edge")

    def with_refinement(self, steps: int) -> CPMCodec:
        """This codec with ``steps`` steps of :meth:`refine` (a copy sharing the model and its
        compiled functions; ``0``: none)."""
        _check_refinement(steps, self.refine_lr, self.objective)
        other = copy.copy(self)
        other.refine_steps, other._memo, other.refine_trace = steps, None, []
        return other

    def refine(self, x: jax.Array, z: jax.Array) -> tuple[jax.Array, list[tuple[float, float, float]]]:
        """Encoder-side latent refinement (as in Campos et al., "Content adaptive optimization for
        neural image compression", 2019): ``refine_steps`` Adam steps (``refine_lr``, cosine-decayed to 0) on the
        encoder's raw output ``z float32 [1, h, w, C + 1]`` for this image ``x float32 [1, H, W, 3]``
        (padded), minimising the loss the model was trained with (:func:`rd_objective`): the
        distortion of the decoded image plus ``beta`` times the bits above ``H_target``, with the
        gradient of the expected bits (:func:`expected_symbol_bits`). Returns the ``z`` with the
        lowest objective seen (the encoder's own output included) and the trace
        ``[(objective, MS-SSIM, bits per symbol)]`` of every step.

        :meth:`analyse` refines images of at least ``MIN_REFINE`` (16) pixels a side after padding
        (what MS-SSIM needs) and codes smaller ones from the encoder's output. The gradient holds
        the decoder's activations for the whole image: the process peaked at 0.92 GB for a 768x512
        image with the shipped high model (0.55 GB without refinement).
        """
        import optax
        from tqdm.auto import tqdm

        _, _, step = _refine_functions(self.spec)
        w = {k: jnp.float32(v) for k, v in self.objective.items()}
        state = optax.scale_by_adam().init(z)
        best, best_value, trace = z, np.inf, []
        n = self.refine_steps
        for i in tqdm(range(n), desc="refining latents", unit="step", disable=not self.progress, leave=False):
            lr = jnp.float32(self.refine_lr * 0.5 * (1.0 + np.cos(np.pi * i / n)))  # cosine decay to 0
            new, state, value, (ms, h) = step(self.params, w, lr, z, state, x)
            trace.append((float(value), float(ms), float(h)))
            if trace[-1][0] < best_value:
                best, best_value = z, trace[-1][0]
            z = new
        return best, trace

    def analyse(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 [H, W, 3]`` -> (symbols ``int32 [h, w, C]`` with masked ones set to the zero
        centre, unmasked channel counts ``k`` ``int32 [h, w]``); with ``refine``, of the refined
        latent (:meth:`refine`)."""
        import hashlib

        rgb = common.as_rgb(check_image(image))
        key = (rgb.shape, hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=16).digest())
        if self._memo is not None and self._memo[0] == key:  # copies: the caller may write into its arrays
            return self._memo[1][0].copy(), self._memo[1][1].copy()
        x = jnp.asarray(self._pad(rgb), jnp.float32)[None]
        self.refine_trace = []
        if self.refine_steps and min(x.shape[1:3]) >= MIN_REFINE:
            latent, bottleneck, _ = _refine_functions(self.spec)
            z, self.refine_trace = self.refine(x, latent(self.params, x))
            out = bottleneck(self.params, z)
        else:
            out = self._encode_fn(self.params, x)
        symbols = np.asarray(out["symbols"][0])
        k = np.asarray(unmasked_count(out["mask"])[0]) if self.spec.importance_map else \
            np.full(symbols.shape[:2], self.spec.channels, np.int32)
        result = (self._apply_mask(symbols, k), np.array(k))
        self._memo = (key, result)
        return result[0].copy(), result[1].copy()

    def _apply_mask(self, symbols: np.ndarray, k: np.ndarray) -> np.ndarray:
        masked = np.arange(self.spec.channels)[None, None, :] >= k[..., None]
        return np.where(masked, self.zero_symbol, symbols).astype(np.int32)

    def synthesise(self, symbols: np.ndarray, height: int, width: int) -> np.ndarray:
        """Symbols ``int [h, w, C]`` (each in ``0 .. L-1``) -> ``uint8 [height, width, 3]`` (at most
        ``8h x 8w``)."""
        symbols = common.check_symbols(symbols, len(self.centers), "the context-model codec",
                                       channels=self.spec.channels)
        common.check_output_size(height, width, symbols.shape[:2], FACTOR, "the context-model codec")
        q = jnp.asarray(self.centers[symbols])[None]
        x = np.asarray(self._decode_fn(self.params, q)[0])
        return np.round(x[:height, :width]).astype(np.uint8)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """What :meth:`decompress` returns for this image, without entropy coding."""
        image = check_image(image)
        symbols, _ = self.analyse(image)
        return common.as_mode(self.synthesise(symbols, *image.shape[:2]), image.ndim == 2)

    # ---- tiles and wavefronts ----------------------------------------------------------

    def _tiles(self, h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
        return [(y, x, min(tile, h - y), min(tile, w - x)) for y in range(0, h, tile) for x in range(0, w, tile)]

    def _plan(self, h: int, w: int) -> _TilePlan:
        if (h, w) not in self._plans:
            self._plans[(h, w)] = _TilePlan(self.spec.channels, h, w)
        return self._plans[(h, w)]

    def _initial_state(self, plan: _TilePlan) -> tuple:
        k = self.spec.context_features
        values = jnp.full((plan.size,), self.centers[0], jnp.float32)
        zeros = jnp.zeros((plan.size, k), jnp.float32)
        return (values, zeros, zeros + 0.0, zeros + 0.0)

    def _run_fronts(self, plan: _TilePlan, symbols: np.ndarray | None, consume):
        """Runs the wavefront steps. With ``symbols`` (encoder: ``[C, h, w]`` known), PMFs of all
        fronts are dispatched first; without (decoder), ``consume(i, pmf)`` must return the
        decoded symbols ``int32 [n_i]`` of front ``i`` before the next step runs."""
        cparams = self.params["context"]
        offsets = jnp.asarray(plan.offsets)
        state = self._initial_state(plan)
        prev_flat = jnp.full((plan.width,), plan.size, jnp.int32)
        prev_values = jnp.zeros((plan.width,), jnp.float32)
        pending = []
        for i, front in enumerate(plan.fronts):
            state, pmf = self._step(cparams, state, prev_flat, prev_values, plan.flat_device[i], offsets)
            if symbols is not None:
                decoded = symbols[front[:, 0], front[:, 1], front[:, 2]]
                pending.append(pmf)
            else:
                decoded = consume(i, np.asarray(pmf)[: len(front)])
            vals = np.zeros((plan.width,), np.float32)
            vals[: len(front)] = self.centers[decoded]
            prev_flat, prev_values = plan.flat_device[i], jnp.asarray(vals)
        if symbols is not None:
            for i, pmf in enumerate(pending):
                consume(i, np.asarray(pmf)[: len(plan.fronts[i])])

    def _kmap_parts(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Importance map ``[h, w]`` in anti-diagonal order with its PMFs ``[h*w, C+1]``."""
        outside = self.spec.channels + 1
        left = np.pad(k[:, :-1], ((0, 0), (1, 0)), constant_values=outside)
        up = np.pad(k[:-1, :], ((1, 0), (0, 0)), constant_values=outside)
        order = _diagonal_order(*k.shape)
        return k.reshape(-1)[order], self.kmap_table[left.reshape(-1)[order], up.reshape(-1)[order]]

    def _encode_tile(self, symbols: np.ndarray, k: np.ndarray,
                     bit_map: np.ndarray | None = None) -> tuple[bytes, float]:
        """``symbols [h, w, C]``, ``k [h, w]`` of one tile -> (payload, ideal bits)."""
        from jaxcomp.coding import encode_categorical_parts, ideal_bits, information_content

        s = self.spec
        h, w = k.shape
        plan = self._plan(h, w)
        vol = np.transpose(symbols, (2, 0, 1))  # [C, h, w]
        parts = []
        if s.importance_map:
            parts.append(self._kmap_parts(k))
        coded_syms, coded_pmfs = [], []

        def consume(i, pmf):
            f = plan.fronts[i]
            keep = f[:, 0] < k[f[:, 1], f[:, 2]]
            sym = vol[f[keep, 0], f[keep, 1], f[keep, 2]]
            coded_syms.append(sym)
            coded_pmfs.append(pmf[keep])
            if bit_map is not None:
                bit_map[f[keep, 1], f[keep, 2]] += information_content(sym, pmf[keep])
            return vol[f[:, 0], f[:, 1], f[:, 2]]

        self._run_fronts(plan, vol, consume)
        parts.append((np.concatenate(coded_syms), np.concatenate(coded_pmfs)))
        bits = sum(ideal_bits(sym, pmf) for sym, pmf in parts)
        return encode_categorical_parts(parts).tobytes(), bits

    def _decode_tile(self, payload: bytes, h: int, w: int) -> np.ndarray:
        from jaxcomp.coding import BitstreamError, CategoricalStreamDecoder

        s = self.spec
        if len(payload) % 4:
            raise BitstreamError("bitstream payload has a length that is not a multiple of 4 bytes")
        decoder = CategoricalStreamDecoder(np.frombuffer(payload, np.uint32))
        if s.importance_map:
            k = self._decode_kmap(decoder, h, w)
        else:
            k = np.full((h, w), s.channels, np.int32)
        plan = self._plan(h, w)
        vol = np.full((s.channels, h, w), self.zero_symbol, np.int32)

        def consume(i, pmf):
            f = plan.fronts[i]
            keep = f[:, 0] < k[f[:, 1], f[:, 2]]
            if keep.any():
                vol[f[keep, 0], f[keep, 1], f[keep, 2]] = decoder.decode(pmf[keep])
            return vol[f[:, 0], f[:, 1], f[:, 2]]

        self._run_fronts(plan, None, consume)
        return np.transpose(vol, (1, 2, 0))

    def _decode_kmap(self, decoder, h: int, w: int) -> np.ndarray:
        outside = self.spec.channels + 1
        k = np.full((h + 1, w + 1), outside, np.int32)  # row 0 / column 0: outside
        for d in range(h + w - 1):
            y = np.arange(max(0, d - w + 1), min(h, d + 1))
            x = d - y
            pmf = self.kmap_table[k[y + 1, x], k[y, x + 1]]
            k[y + 1, x + 1] = decoder.decode(pmf)
        return k[1:, 1:]

    # ---- public API -------------------------------------------------------------------

    def compress(self, image: np.ndarray, return_bits: bool = False) -> bytes | tuple[bytes, float]:
        """``uint8 [H, W, 3]`` (or ``[H, W]``) -> bitstream ``bytes`` (and, with ``return_bits``,
        the ideal information content of the coded symbols in bits)."""
        import zlib

        from jaxcomp.coding import MAX_PAYLOADS, pack

        image = check_image(image)
        n_tiles = len(self._tiles(-(-image.shape[0] // FACTOR), -(-image.shape[1] // FACTOR), self.tile // FACTOR))
        if n_tiles > MAX_PAYLOADS:  # one payload a tile
            raise ValueError(f"{n_tiles} tiles exceed a stream's {MAX_PAYLOADS} payloads: compress with a larger "
                             f"tile (now {self.tile}) or split the image")
        symbols, k = self.analyse(image)
        recon = common.as_mode(self.synthesise(symbols, *image.shape[:2]), image.ndim == 2)
        payloads, bits = [], 0.0
        for y, x, th, tw in self._tiles(*k.shape, self.tile // FACTOR):
            p, b = self._encode_tile(symbols[y:y + th, x:x + tw], k[y:y + th, x:x + tw])
            payloads.append(p)
            bits += b
        # short keys: height, width, mode, tile (pixels), numerics, CRC-32 of the reconstruction
        meta = dict(h=image.shape[0], w=image.shape[1], m="L" if image.ndim == 2 else "RGB",
                    t=self.tile, n=self.numerics, c=zlib.crc32(recon.tobytes()))
        data = pack(self.codec_name, self.fingerprint, meta, payloads)
        return (data, bits) if return_bits else data

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` if the input was grayscale).

        Raises:
          jaxcomp.coding.BitstreamError: not a bitstream of this codec and model, truncated,
            corrupt, or the decoded image does not match the encoder's checksum.
        """
        import zlib

        from jaxcomp.coding import BitstreamError, CodingError, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, tile, mode, crc = int(meta["h"]), int(meta["w"]), int(meta["t"]), meta["m"], int(meta["c"])
            stream_numerics = str(meta["n"])
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"bitstream metadata is incomplete: {e}") from e
        if not (0 < h <= common.MAX_SIDE and 0 < w <= common.MAX_SIDE and 0 < tile <= MAX_TILE and tile % FACTOR == 0
                and mode in ("L", "RGB")):
            raise BitstreamError(f"bitstream metadata is invalid: {meta}")
        if stream_numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {stream_numerics} numerics and this process computes with "
                f"{self.numerics}: the model's probabilities would differ, so it cannot be decoded here. "
                + common.NUMERICS_HELP)
        lh, lw = -(-h // FACTOR), -(-w // FACTOR)
        tiles = self._tiles(lh, lw, tile // FACTOR)
        if len(payloads) != len(tiles):
            raise BitstreamError(f"bitstream has {len(payloads)} payloads, expected {len(tiles)}")
        try:
            symbols = np.zeros((lh, lw, self.spec.channels), np.int32)
            for payload, (y, x, th, tw) in zip(payloads, tiles):
                symbols[y:y + th, x:x + tw] = self._decode_tile(payload, th, tw)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
        except MemoryError as e:  # a header claiming an image far larger than its payload (a forged size)
            raise BitstreamError(f"bitstream claims a {h}x{w} image that this process cannot hold in memory") from e
        image = common.as_mode(self.synthesise(symbols, h, w), mode == "L")
        if zlib.crc32(np.ascontiguousarray(image).tobytes()) != crc:
            raise BitstreamError("decoded image does not match the encoder's checksum: the model computed "
                                 "different values here than when compressing (different platform or jaxlib?)")
        return image

    def estimate_bits(self, image: np.ndarray) -> float:
        """Cross-entropy estimate (the training rate, full conv context model per tile) of the
        bits :meth:`compress` spends on the latent and the importance map."""
        image = check_image(image)
        symbols, k = self.analyse(image)
        total = 0.0
        for y, x, th, tw in self._tiles(*k.shape, self.tile // FACTOR):
            sym, kk = symbols[y:y + th, x:x + tw], k[y:y + th, x:x + tw]
            logits = self._logits_fn(self.params, jnp.asarray(self.centers[sym])[None])
            bc = np.asarray(symbol_bits(logits, jnp.asarray(sym)[None]))[0]
            coded = np.arange(self.spec.channels)[None, None] < kk[..., None]
            total += float(bc[coded].sum())
            if self.spec.importance_map:
                total += float(kmap_bits(KMAP_SCALE * self.params["kmap_logits"], jnp.asarray(kk)[None])[0])
        return total

    def bit_map(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-position coding cost: (bits of the latent symbols at each latent position
        ``float32 [h, w]``, the importance map ``k`` ``int32 [h, w]``)."""
        image = check_image(image)
        symbols, k = self.analyse(image)
        out = np.zeros(k.shape, np.float64)
        for y, x, th, tw in self._tiles(*k.shape, self.tile // FACTOR):
            part = np.zeros((th, tw), np.float64)
            self._encode_tile(symbols[y:y + th, x:x + tw], k[y:y + th, x:x + tw], bit_map=part)
            out[y:y + th, x:x + tw] = part
        return out.astype(np.float32), k


def _diagonal_order(h: int, w: int) -> np.ndarray:
    """Flat indices of an ``[h, w]`` map in anti-diagonal order (row-major within a diagonal)."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.lexsort((y.reshape(-1), (y + x).reshape(-1)))




def check_image(image: np.ndarray) -> np.ndarray:
    """Accepts ``uint8 [H, W, 3]`` or ``uint8 [H, W]``; anything else is a clear ``ValueError``."""
    return common.check_image(image, "the context-model codec")


OPERATING_POINTS = ("low", "med", "high")


def shipped_model(point: str = "med") -> str:
    """Path of the shipped model of an operating point (``low``, ``med``, ``high``)."""
    import os

    from jaxcomp.codecs.pretrained import PRETRAINED_DIR

    if point not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point {point!r}; known: {', '.join(OPERATING_POINTS)}")
    return os.path.join(PRETRAINED_DIR, f"cpm_{point}.msgpack")


def load_codec(checkpoint: str | None = None, tile: int = 1024, refine: int = 0, refine_lr: float = 0.1,
               progress: bool = False) -> CPMCodec:
    """A :class:`CPMCodec` from a shipped operating point (``None``/``"med"``, ``"low"``,
    ``"high"``), an exported ``.msgpack`` or a training workdir; ``refine`` steps of encoder-side
    latent refinement under the model's own training objective (:meth:`CPMCodec.refine`)."""
    from jaxcomp.modelfile import load_model

    if checkpoint is None or checkpoint in OPERATING_POINTS:
        checkpoint = shipped_model(checkpoint or "med")
    config, params, _ = load_model(checkpoint, task="cpm")
    spec = spec_from_config(config.model)
    check_model_params(params, spec, checkpoint)
    return CPMCodec(spec, params, tile=tile, refine=refine,
                    objective=objective_weights(config.loss), refine_lr=refine_lr, progress=progress)

