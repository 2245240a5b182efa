"""2-D wavelet scattering transform (Bruna & Mallat 2013) in JAX, with kymatio's Morlet filters.

``scattering2d(x, J, L, max_order)`` maps images ``(N, H, W)`` to
``(N, K, H // 2**J, W // 2**J)`` coefficients, ``K = 1 + J L + L^2 J (J - 1) / 2`` for order 2:

* order 0: ``x * phi_J`` (a Gaussian low-pass average at scale ``2^J``);
* order 1: ``|x * psi_{j1,t1}| * phi_J`` for ``j1 < J``, ``t1 < L``;
* order 2: ``||x * psi_{j1,t1}| * psi_{j2,t2}| * phi_J`` for ``j1 < j2 < J``,

all subsampled by ``2^J``. It follows kymatio 0.3's ``Scattering2D`` (the definition used by
the subspace-clustering literature's MNIST features): the same filter bank (Morlet wavelets
``sigma = 0.8 2^j``, centre frequency ``3 pi / 4 / 2^j``, slant ``4 / L``, angles
``(L/2 - 1 - t) pi / L``; Gaussian low-pass ``sigma = 0.8 2^(J-1)``; built in space on the padded
grid, periodised over 5 x 5 periods, Fourier transformed, real part kept, and folded to the
coarser resolutions), reflect padding to a multiple of ``2^J`` with one extra block, convolutions
as products in the Fourier domain, subsampling by periodisation in the Fourier domain, and the
same channel order (order 0; order 1 by ``(j1, t1)``; order 2 by ``(j1, t1, j2, t2)``). One
deliberate difference: the Gaussian normalisation uses ``pi``, kymatio's code ``3.1415`` (a
relative scale of 3e-5 per filter; see ``tests/test_scattering.py`` for the tolerance).

The filters are built on the host with numpy (cached per shape); the transform itself is one
jitted, batched function. :func:`scattering_features` runs it over a large array in batches.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.checks import is_whole

# ----------------------------------------------------------------------------- filter bank


def padded_shape(H: int, W: int, J: int) -> tuple[int, int]:
    """The padded grid ``(Hp, Wp)``: the next multiple of ``2^J`` above ``H + 2^J`` (kymatio's rule).

    After subsampling by ``2^J`` and dropping one border coefficient on each side the output is
    ``(H // 2^J, W // 2^J)``.
    """
    s = 2**J
    return ((H + s) // s + 1) * s, ((W + s) // s + 1) * s


def gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """Periodised 2-D Gabor filter in space, ``(M, N)`` complex128.

    ``g(u) = exp(-u^T R diag(1, slant^2) R^T u / (2 sigma^2) + i xi (u_0 cos theta + u_1 sin theta))
    / (2 pi sigma^2 / slant)``, summed over the ``5 x 5`` periods ``u + (a M, b N)``,
    ``a, b in {-2..2}``, at the integer grid points ``u in [0, M) x [0, N)``.
    """
    c, s = math.cos(theta), math.sin(theta)
    R = np.array([[c, -s], [s, c]])
    curv = R @ np.diag([1.0, slant * slant]) @ R.T / (2.0 * sigma * sigma)
    u0 = (np.arange(M)[None, :] + M * np.arange(-2, 3)[:, None]).reshape(-1)  # (5M,)
    u1 = (np.arange(N)[None, :] + N * np.arange(-2, 3)[:, None]).reshape(-1)  # (5N,)
    X0, X1 = np.meshgrid(u0, u1, indexing="ij")
    arg = -(curv[0, 0] * X0 * X0 + (curv[0, 1] + curv[1, 0]) * X0 * X1 + curv[1, 1] * X1 * X1)
    arg = arg + 1j * xi * (X0 * c + X1 * s)
    g = np.exp(arg).reshape(5, M, 5, N).sum(axis=(0, 2))
    return g / (2.0 * math.pi * sigma * sigma / slant)


def morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 0.5) -> np.ndarray:
    """Morlet wavelet: the Gabor filter minus ``K`` times its envelope, ``K`` chosen so that the
    filter sums to exactly zero. ``(M, N)`` complex128 in space."""
    wv = gabor_2d(M, N, sigma, theta, xi, slant)
    env = gabor_2d(M, N, sigma, theta, 0.0, slant)
    return wv - (wv.sum() / env.sum()) * env


def fold_to_resolution(f_hat: np.ndarray, res: int) -> np.ndarray:
    """A Fourier-domain filter ``(M, N)`` for signals subsampled by ``2^res``: its frequencies
    above the new Nyquist band are zeroed and the rest aliased (periodised) onto ``(M/2^res,
    N/2^res)`` (kymatio's ``periodize_filter_fft``)."""
    M, N = f_hat.shape
    k = 2**res
    x = f_hat.copy()
    sx, lx = int(M * 2.0 ** (-res - 1)), int(M * (1 - 2.0**-res))
    sy, ly = int(N * 2.0 ** (-res - 1)), int(N * (1 - 2.0**-res))
    x[sx:sx + lx, :] = 0
    x[:, sy:sy + ly] = 0
    return x.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


@functools.lru_cache(maxsize=16)
def filter_bank(M: int, N: int, J: int, L: int = 8) -> dict:
    """Fourier-domain Morlet filter bank on the padded ``(M, N)`` grid (real float32 arrays).

    Returns:
      ``{"phi": [J arrays], "psi": {(j, res): (L, M/2^res, N/2^res)}}``: ``phi[res]`` is the
      low-pass ``(M/2^res, N/2^res)``; ``psi[(j, res)]`` holds the ``L`` wavelets of scale ``j``
      at resolution ``res`` (``res <= j``, ``res < max(J - 1, 1)``), angle index on axis 0.
    """
    psi = {}
    for j in range(J):
        hats = []
        for t in range(L):
            w = morlet_2d(M, N, 0.8 * 2**j, (int(L - L / 2 - 1) - t) * math.pi / L, 3.0 / 4.0 * math.pi / 2**j, 4.0 / L)
            hats.append(np.real(np.fft.fft2(w)))
        for res in range(min(j + 1, max(J - 1, 1))):
            psi[(j, res)] = np.stack([fold_to_resolution(h, res) for h in hats]).astype(np.float32)
    phi_hat = np.real(np.fft.fft2(gabor_2d(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0)))
    phi = [fold_to_resolution(phi_hat, res).astype(np.float32) for res in range(J)]
    return {"phi": phi, "psi": psi}


def n_channels(J: int, L: int = 8, max_order: int = 2) -> int:
    """``K``: 1 + J L (order 1) + L^2 J (J - 1) / 2 (order 2)."""
    return 1 + J * L + (L * L * J * (J - 1) // 2 if max_order == 2 else 0)


# ----------------------------------------------------------------------------- transform


def _subsample(x_hat: jax.Array, k: int) -> jax.Array:
    """Fourier transform of the spatial subsampling ``x[::k, ::k]`` (periodisation of the spectrum)."""
    if k == 1:
        return x_hat
    M, N = x_hat.shape[-2:]
    return x_hat.reshape(x_hat.shape[:-2] + (k, M // k, k, N // k)).mean(axis=(-4, -2))


def _unpad(x: jax.Array) -> jax.Array:
    return x[..., 1:-1, 1:-1]


def check_images(x: np.ndarray | jax.Array, J: int, L: int, max_order: int) -> tuple[int, int]:
    """Validates the arguments of :func:`scattering2d` on the host; returns ``(H, W)``."""
    for name, v, lo in (("J", J, 1), ("L", L, 1)):
        if not is_whole(v) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if max_order not in (1, 2):
        raise ValueError(f"max_order must be 1 or 2, got {max_order!r}")
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"images must be a (N, H, W) array, got shape {shape}")
    dtype = np.dtype(getattr(x, "dtype", np.float32))
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"images must be real floating point (e.g. float32 in [0, 1]), got dtype {dtype}")
    H, W = int(shape[1]), int(shape[2])
    Hp, Wp = padded_shape(H, W, J)
    if 2**J > min(H, W) or (Hp - H + 1) // 2 >= H or (Wp - W + 1) // 2 >= W:
        raise ValueError(f"images of {H}x{W} are too small for J={J}: need H, W >= 2^J and the reflect padding "
                         f"to {Hp}x{Wp} narrower than the image")
    return H, W


@functools.partial(jax.jit, static_argnames=("J", "L", "max_order"))
def _scattering2d(x: jax.Array, J: int, L: int, max_order: int) -> jax.Array:
    B, H, W = x.shape
    Hp, Wp = padded_shape(H, W, J)
    bank = filter_bank(Hp, Wp, J, L)
    phi = [jnp.asarray(p) for p in bank["phi"]]
    psi = {k: jnp.asarray(v) for k, v in bank["psi"].items()}
    pads = ((0, 0), ((Hp - H) // 2, (Hp - H + 1) // 2), ((Wp - W) // 2, (Wp - W + 1) // 2))
    U0 = jnp.fft.fft2(jnp.pad(x.astype(jnp.float32), pads, mode="reflect"))  # (B, Hp, Wp) complex64

    def lowpass(U_hat, j):  # U_hat at resolution j -> real output at scale J
        return _unpad(jnp.real(jnp.fft.ifft2(_subsample(U_hat * phi[j], 2 ** (J - j)))))

    out = [lowpass(U0, 0)[:, None]]
    order1, order2 = [], []
    for j1 in range(J):
        U1 = jnp.abs(jnp.fft.ifft2(_subsample(U0[:, None] * psi[(j1, 0)], 2**j1)))  # (B, L, ., .)
        U1 = jnp.fft.fft2(U1)
        order1.append(lowpass(U1, j1))
        if max_order < 2 or j1 == J - 1:
            continue
        blocks = []
        for j2 in range(j1 + 1, J):
            U2 = U1[:, :, None] * psi[(j2, j1)][None, None]  # (B, L, L, ., .)
            U2 = jnp.fft.fft2(jnp.abs(jnp.fft.ifft2(_subsample(U2, 2 ** (j2 - j1)))))
            blocks.append(lowpass(U2, j2))
        S2 = jnp.concatenate(blocks, axis=2)  # (B, L [t1], (J-1-j1) L [j2, t2], h, w)
        order2.append(S2.reshape((B, -1) + S2.shape[-2:]))
    return jnp.concatenate(out + order1 + order2, axis=1)


def scattering2d(x: np.ndarray | jax.Array, J: int = 3, L: int = 8, max_order: int = 2) -> jax.Array:
    """Scattering coefficients of a batch of images.

    Args:
      x: ``(N, H, W)`` real images (float32 recommended; cast to float32).
      J: number of octaves (the output is subsampled by ``2^J``), ``2^J <= H, W``.
      L: number of wavelet orientations in ``[0, pi)``.
      max_order: 1 or 2.

    Returns:
      ``(N, K, H // 2^J, W // 2^J)`` float32, ``K = n_channels(J, L, max_order)``, channels in
      kymatio's order. Jitted (one compilation per input shape and ``(J, L, max_order)``).

    Raises:
      ValueError: bad shape/dtype (e.g. integer images), or images too small for ``J``.
    """
    check_images(x, J, L, max_order)
    return _scattering2d(jnp.asarray(x), int(J), int(L), int(max_order))


def scattering_features(images: np.ndarray, J: int = 3, L: int = 8, max_order: int = 2, batch_size: int = 256,
                        progress: bool = False) -> np.ndarray:
    """:func:`scattering2d` over a large ``(N, H, W)`` array, ``batch_size`` images per call (the
    last batch padded, so one compiled program). Returns ``(N, K, H // 2^J, W // 2^J)`` float32
    numpy. Peak memory is about ``batch_size * L^2 * Hp * Wp * 8`` bytes (order 2)."""
    check_images(images, J, L, max_order)
    if not is_whole(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    B = int(min(batch_size, n))
    outs = []
    it = range(0, n, B)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="scattering", unit="batch", total=-(-n // B))
    for s in it:
        xb = images[s:s + B]
        k = xb.shape[0]
        if k < B:
            xb = np.concatenate([xb, np.zeros((B - k,) + xb.shape[1:], np.float32)])
        outs.append(np.asarray(_scattering2d(jnp.asarray(xb), int(J), int(L), int(max_order)))[:k])
    return np.concatenate(outs)
