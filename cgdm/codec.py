"""CGDM's base codec: a variable-rate mean-scale hyperprior with a neural-syntax stream.

Architecture (one model for all rate points)::

    x ─pad─► g_a ─► y ─×gain[r]─► Q ─► GC(means, scales) ─► ÷gain[r] ─► g_s[:-1] ─► syntax 1x1 ─► g_s[-1] ─► x_hat
                 │         └─► h_a ─► z ─×hgain[r]─► Q ─► EB ─► ÷hgain[r] ─► h_s ─► (means, scales) ┘     ▲
                 └─► syntax encoder ─► s ─► Q ─► EB_syntax ─► s_hat ─────────────────────────────────────┘

* Transforms and hyperprior: Minnen et al. 2018 ("Joint autoregressive and hierarchical priors"),
  without the autoregressive context so decoding stays parallel; GDN/IGDN transforms as in CompressAI's
  ``mbt2018-mean``.
* Gain units (Cui et al., "Asymmetric gained deep image compression with continuous rate adaptation",
  CVPR 2021): a learned per-channel gain vector per rate index scales ``y`` (and ``z``) before
  quantisation and a learned inverse gain undoes it afterwards, so one network covers ``num_rates``
  lambda values.
* Neural syntax (:mod:`cgdm.syntax`): a separately coded global vector that parameterises a per-image
  1x1 convolution in the last synthesis stage.

Every stream uses CompressAI's entropy models and range coder (``compress``/``decompress``). In eval mode
:meth:`BaseCodec.forward` uses the dequantised values (``round(y - mean) + mean``) exactly as the decoder
reconstructs them, so ``decompress(compress(x))`` equals ``forward(x)["x_hat"].clamp(0, 1)``
bit-exactly on the same device.

Any image size is accepted: the input is replicate-padded on the right/bottom to a multiple of 64 (the
total downsampling of ``g_a`` and ``h_a``) and the outputs are cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models import CompressionModel
from compressai.models.base import SCALES_MAX, SCALES_MIN, get_scale_table
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor, nn

from cgdm.rans_guard import guard
from cgdm.syntax import NeuralSyntax

__all__ = ["ARCH", "PAD_MULTIPLE", "BaseCodec", "NearestScaleGaussianConditional", "estimate_bits"]

#: architecture identifier stored in checkpoints and (as a code) in .cgdm headers
ARCH = "cgdm-base-vr-mshp"
#: total stride of the analysis (16) times the hyper analysis (4)
PAD_MULTIPLE = 64
#: levels of the Gaussian conditional's scale table (CompressAI: 64). With nearest-scale indexing
#: (NearestScaleGaussianConditional) 128 levels put the y stream within ~0.05 % of its estimate.
SCALE_TABLE_LEVELS = 128
#: decoding synthesises images whose padded size exceeds this many pixels in horizontal strips of about
#: this many pixels (peak memory bounded by the strip; smaller images take the exact whole-image path)
SYNTHESIS_STRIP_PIXELS = 1 << 22
#: latent rows of context on each side of a strip (receptive field of the synthesis, see synthesize_rows)
SYNTHESIS_HALO = 2
#: fewest latent rows per strip (very wide images): halo overhead at most 2 / 4
SYNTHESIS_MIN_STRIP = 4


class NearestScaleGaussianConditional(GaussianConditional):
    """CompressAI's Gaussian conditional, coding each element with the table scale *nearest* (in log) to
    the predicted one.

    CompressAI's ``build_indexes`` takes the next larger table scale, which widens every Gaussian: on
    the quick model that costs 0.8 % of the y stream over the estimated rate with 256 levels and 3.5 %
    with 64. Rounding to the nearest table scale removes the bias (0.02 % with 128 levels). Only the
    choice of CDF changes; the range coder and the bitstream syntax are CompressAI's.
    """

    def build_indexes(self, scales: Tensor) -> Tensor:
        log_table = self.scale_table.log()
        midpoints = (log_table[:-1] + log_table[1:]) / 2
        return torch.bucketize(self.lower_bound_scale(scales).log(), midpoints).int()


class BaseCodec(CompressionModel):
    """Variable-rate mean-scale hyperprior with gain units and a neural-syntax stream.

    Args:
        N: channels of the transforms (64 quick profile, 128 paper size).
        M: channels of the latent ``y`` (96 quick profile, 192 paper size).
        num_rates: number of rate points (one gain vector each).
        syntax_dim: length of the neural-syntax vector.
        syntax_pool_channels: leading latent channels the syntax encoder looks at (default: all).

    ``forward(x, rate_idx)`` with ``x`` float (B, 3, H, W) in [0, 1] and ``rate_idx`` an int or a
    LongTensor (B,) returns ``x_hat`` (unclamped, cropped to H x W), ``likelihoods``
    (``y``, ``z``, ``syntax``), ``features`` (the input of the last synthesis layer, cropped to
    ceil(H/2) x ceil(W/2)) and ``syntax`` (the decoded syntax vector, (B, syntax_dim)).
    """

    def __init__(self, N: int = 64, M: int = 96, num_rates: int = 4, syntax_dim: int = 16,
                 syntax_pool_channels: int | None = None):
        super().__init__()
        if num_rates < 1:
            raise ValueError(f"num_rates must be >= 1, got {num_rates}")
        self.N, self.M, self.num_rates, self.syntax_dim = int(N), int(M), int(num_rates), int(syntax_dim)
        self.syntax_pool_channels = syntax_pool_channels

        self.g_a = nn.Sequential(
            conv(3, N), GDN(N),
            conv(N, N), GDN(N),
            conv(N, N), GDN(N),
            conv(N, M),
        )
        # the synthesis is split before its last layer: the features in between are modulated by the
        # neural syntax and exposed to the diffusion decoder
        self.g_s_body = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
        )
        self.g_s_head = deconv(N, 3)
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = NearestScaleGaussianConditional(None)
        self.syntax = NeuralSyntax(M, N, syntax_dim=syntax_dim, pool_channels=syntax_pool_channels)

        # Gain units, stored as logarithms so they stay positive. Cui et al. initialise to 1;
        # init_gains() spreads them according to the training lambdas for a faster start.
        self.log_gain = nn.Parameter(torch.zeros(num_rates, M))
        self.log_inv_gain = nn.Parameter(torch.zeros(num_rates, M))
        self.log_hyper_gain = nn.Parameter(torch.zeros(num_rates, N))
        self.log_hyper_inv_gain = nn.Parameter(torch.zeros(num_rates, N))

    # -- configuration -----------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """Constructor arguments (stored in checkpoints so the model can be rebuilt)."""
        return {"N": self.N, "M": self.M, "num_rates": self.num_rates, "syntax_dim": self.syntax_dim,
                "syntax_pool_channels": self.syntax_pool_channels}

    @torch.no_grad()
    def init_gains(self, lambdas: Sequence[float]) -> None:
        """Spread the initial gains as sqrt(lambda / geometric mean): at high rate the MSE-optimal
        quantisation step scales like lambda^-1/2, so this is where training would move them anyway."""
        if len(lambdas) != self.num_rates:
            raise ValueError(f"expected {self.num_rates} lambdas, got {len(lambdas)}")
        logs = torch.tensor([math.log(float(lam)) for lam in lambdas])
        g = 0.5 * (logs - logs.mean())
        self.log_gain.copy_(g[:, None].expand_as(self.log_gain))
        self.log_inv_gain.copy_(-g[:, None].expand_as(self.log_inv_gain))

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        """Build the range coder's CDF tables (after training / before coding)."""
        if scale_table is None:
            scale_table = get_scale_table(SCALES_MIN, SCALES_MAX, SCALE_TABLE_LEVELS)
        return super().update(scale_table=scale_table, force=force, update_quantiles=update_quantiles)

    # -- helpers -----------------------------------------------------------------------------------
    def _rate_index(self, rate_idx: int | Tensor, batch: int, device: torch.device) -> Tensor:
        r = torch.as_tensor(rate_idx, dtype=torch.long, device=device)
        if r.ndim == 0:
            r = r.expand(batch)
        if r.shape != (batch,):
            raise ValueError(f"rate_idx must be an int or a LongTensor of shape ({batch},), got {tuple(r.shape)}")
        if bool(((r < 0) | (r >= self.num_rates)).any()):
            raise ValueError(f"rate index out of range: {r.tolist()}; this model has rates 0..{self.num_rates - 1}")
        return r

    @staticmethod
    def _gain(log_gain: Tensor, r: Tensor) -> Tensor:
        return torch.exp(log_gain[r])[:, :, None, None]

    @staticmethod
    def _check_input(x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected x of shape (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float tensor in [0, 1], got {x.dtype}")

    @staticmethod
    def latent_shapes(image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """(y shape, z shape) for an image of ``(H, W)`` after padding to a multiple of 64."""
        h, w = image_size
        hp, wp = -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE
        return (hp // 16, wp // 16), (hp // 64, wp // 64)

    @staticmethod
    def _pad(x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        # replicate, not zeros: a flat border costs almost no bits and has no edge to ring
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def _synthesize(self, y_hat: Tensor, syntax_hat: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        h, w = size
        features = self.syntax.modulate(self.g_s_body(y_hat), syntax_hat)
        x_hat = self.g_s_head(features)
        return x_hat[..., :h, :w], features[..., : -(-h // 2), : -(-w // 2)]

    # -- strip-wise synthesis (large images) --------------------------------------------------------
    @staticmethod
    def synthesis_strip_rows(y_shape: tuple[int, int], strip_pixels: int | None = None) -> int | None:
        """Output rows per synthesis strip for a latent of ``y_shape`` (h, w), or ``None`` when the whole
        image is synthesised at once (padded size up to ``strip_pixels``: the exact whole-image path).
        Strips are multiples of 16 rows (one latent row) and hold about ``strip_pixels`` output pixels
        (default: :data:`SYNTHESIS_STRIP_PIXELS`, read at call time so tests can lower it)."""
        strip_pixels = SYNTHESIS_STRIP_PIXELS if strip_pixels is None else int(strip_pixels)
        hy, wy = y_shape
        if hy * wy * 256 <= strip_pixels:
            return None
        return 16 * max(SYNTHESIS_MIN_STRIP, strip_pixels // (wy * 256))

    def synthesize_rows(self, y_hat: Tensor, syntax_hat: Tensor, top: int, bottom: int,
                        image: bool = True, features: bool = True) -> tuple[Tensor | None, Tensor | None]:
        """Rows ``[top, bottom)`` of the synthesis output, full width, computed from the latent rows they
        depend on (``y_hat`` already divided by the gain, as given to the synthesis).

        Returns ``(x_hat rows (B, 3, bottom - top, 16 w), features rows (B, N, (bottom - top) / 2, 8 w))``
        of the *padded* image (crop to the image size yourself); ``top`` and ``bottom`` must be even.
        Output row ``o`` of a transposed convolution (kernel 5, stride 2, padding 2) reads input rows
        ``(o - 2) / 2 .. (o + 2) / 2``; GDN and the syntax 1x1 convolution are per position. Through the
        four upsampling layers a missing latent row ``j`` therefore reaches output rows ``16 j - 30`` to
        ``16 j + 14``, so ``SYNTHESIS_HALO`` = 2 latent rows of context (1 would do above, 2 are needed
        below) make the rows equal to the whole-image synthesis up to float summation order (tested in
        tests/test_tiled_synthesis.py, which also checks that a smaller halo fails)."""
        if top % 2 or bottom % 2 or not 0 <= top < bottom <= 16 * y_hat.shape[-2]:
            raise ValueError(f"rows [{top}, {bottom}) must be even and inside the synthesis output "
                             f"(0..{16 * y_hat.shape[-2]})")
        a = max(0, top // 16 - SYNTHESIS_HALO)
        b = min(y_hat.shape[-2], -(-bottom // 16) + SYNTHESIS_HALO)
        f = self.syntax.modulate(self.g_s_body(y_hat[..., a:b, :]), syntax_hat)
        x = self.g_s_head(f)[..., top - 16 * a:bottom - 16 * a, :] if image else None
        f = f[..., top // 2 - 8 * a:bottom // 2 - 8 * a, :] if features else None
        return x, f

    def synthesize(self, y_hat: Tensor, syntax_hat: Tensor, size: tuple[int, int], features: bool = True,
                   strip_pixels: int | None = None) -> tuple[Tensor, Tensor | None]:
        """``(x_hat, features)`` cropped to ``size`` (features to half of it), like the forward pass.

        Images whose padded size exceeds ``strip_pixels`` are synthesised in horizontal strips written
        into preallocated outputs, so the transform's activations (N channels at 1/2 resolution, ~0.5 GB
        each at 3840x2160) are bounded by the strip, not the image; smaller ones take the whole-image
        path. ``features=False`` skips the feature output (the base codec alone needs only pixels)."""
        rows = self.synthesis_strip_rows(tuple(y_hat.shape[-2:]), strip_pixels)
        if rows is None:
            x_hat, f = self._synthesize(y_hat, syntax_hat, size)
            return x_hat, (f if features else None)
        h, w = size
        b = y_hat.shape[0]
        x_hat = y_hat.new_empty((b, 3, h, w))
        feats = y_hat.new_empty((b, self.N, -(-h // 2), -(-w // 2))) if features else None
        for top in range(0, h, rows):
            bottom = min(h + h % 2, top + rows)  # even, so the feature rows line up
            x, f = self.synthesize_rows(y_hat, syntax_hat, top, bottom, features=features)
            x_hat[..., top:min(h, bottom), :] = x[..., :min(h, bottom) - top, :w]
            if features:
                feats[..., top // 2:bottom // 2, :] = f[..., : -(-w // 2)]
            del x, f
        return x_hat, feats

    # -- training / estimation ---------------------------------------------------------------------
    def forward(self, x: Tensor, rate_idx: int | Tensor) -> dict:
        self._check_input(x)
        size = tuple(x.shape[-2:])
        r = self._rate_index(rate_idx, x.size(0), x.device)
        y = self.g_a(self._pad(x))
        y_g = y * self._gain(self.log_gain, r)
        z = self.h_a(y_g) * self._gain(self.log_hyper_gain, r)
        z_tilde, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self.h_s(z_tilde * self._gain(self.log_hyper_inv_gain, r)).chunk(2, 1)
        y_tilde, y_likelihoods = self.gaussian_conditional(y_g, scales_hat, means=means_hat)
        if self.training:
            # "mixed" quantisation (Minnen & Singh 2020): noise for the rate term, straight-through
            # rounding for the decoder, so the synthesis trains on the values it sees at test time
            y_hat = quantize_ste(y_g - means_hat) + means_hat
        else:
            y_hat = y_tilde  # = round(y - mean) + mean, exactly what decompress() rebuilds
        syntax_hat, s_likelihoods = self.syntax(y)
        x_hat, features = self._synthesize(y_hat * self._gain(self.log_inv_gain, r), syntax_hat, size)
        return {
            "x_hat": x_hat,
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods, "syntax": s_likelihoods},
            "features": features,
            "syntax": syntax_hat.flatten(1),
        }

    # -- real coding -------------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: Tensor, rate_idx: int | Tensor) -> dict:
        """Entropy-code ``x``. Returns ``{"strings": {"y", "z", "syntax"}: list[bytes] (one per image),
        "shape": z spatial shape, "image_size": (H, W), "rate_idx": list[int]}``."""
        self._check_input(x)
        size = tuple(x.shape[-2:])
        r = self._rate_index(rate_idx, x.size(0), x.device)
        y = self.g_a(self._pad(x))
        return self.compress_latents(y * self._gain(self.log_gain, r), self.syntax.analyse(y), r, size)

    @torch.no_grad()
    def compress_latents(self, y_g: Tensor, s: Tensor, r: Tensor, image_size: tuple[int, int]) -> dict:
        """Entropy-code a gained latent ``y_g`` and an unquantised syntax vector ``s`` (the one coding
        path: :meth:`compress` gives it the analysis transform's values, online optimisation its refined
        ones; the decoder cannot tell the difference)."""
        z = self.h_a(y_g) * self._gain(self.log_hyper_gain, r)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales_hat, means_hat = self.h_s(z_hat * self._gain(self.log_hyper_inv_gain, r)).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_strings = self.gaussian_conditional.compress(y_g, indexes, means=means_hat)
        s_strings = self.syntax.entropy_bottleneck.compress(s)
        return {
            "strings": {"y": y_strings, "z": z_strings, "syntax": s_strings},
            "shape": tuple(z.shape[-2:]),
            "image_size": image_size,
            "rate_idx": r.tolist(),
        }

    @torch.no_grad()
    def decompress(self, strings: dict[str, list[bytes]], rate_idx: int | Tensor,
                   image_size: tuple[int, int], features: bool = True, synthesize: bool = True) -> dict:
        """Inverse of :meth:`compress`. Returns ``x_hat`` (clamped to [0, 1]), ``features`` (``None`` with
        ``features=False``), ``syntax``. Large images are synthesised in strips (:meth:`synthesize`).

        ``synthesize=False`` stops after entropy decoding and returns ``y_hat`` (divided by the gain),
        ``syntax_hat`` (B, D, 1, 1) and ``syntax``, for callers that synthesise rows on demand
        (:meth:`synthesize_rows`; full CGDM on large images)."""
        for key in ("y", "z", "syntax"):
            if key not in strings:
                raise ValueError(f"missing stream {key!r}")
        batch = len(strings["z"])
        if not (len(strings["y"]) == len(strings["syntax"]) == batch):
            raise ValueError("streams y, z and syntax must hold one string per image each")
        y_hat, syntax_hat = self.decode_latents(strings, rate_idx, image_size)
        if not synthesize:
            return {"y_hat": y_hat, "syntax_hat": syntax_hat, "syntax": syntax_hat.flatten(1)}
        x_hat, feats = self.synthesize(y_hat, syntax_hat, tuple(image_size), features=features)
        return {"x_hat": x_hat.clamp_(0, 1), "features": feats, "syntax": syntax_hat.flatten(1)}

    @torch.no_grad()
    def decode_latents(self, strings: dict[str, list[bytes]], rate_idx: int | Tensor,
                       image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Entropy decoding alone: ``(y_hat / gain, syntax_hat)``, the input of :meth:`synthesize` /
        :meth:`synthesize_rows` (all at latent resolution: 1/256 of the pixels). No input checks: use
        :meth:`decompress`, or check ``strings`` as it does."""
        device = next(self.parameters()).device
        r = self._rate_index(rate_idx, len(strings["z"]), device)
        _, z_shape = self.latent_shapes(image_size)
        # every stream is decoded inside a zero-padded copy and must end exactly where it ends
        # (cgdm.rans_guard: CompressAI's decoder never checks the length of its input)
        guard(self.entropy_bottleneck, self.gaussian_conditional, self.syntax.entropy_bottleneck)
        z_hat = self.entropy_bottleneck.decompress(strings["z"], z_shape)
        scales_hat, means_hat = self.h_s(z_hat * self._gain(self.log_hyper_inv_gain, r)).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        del scales_hat
        y_hat = self.gaussian_conditional.decompress(strings["y"], indexes, means=means_hat)
        return y_hat.mul_(self._gain(self.log_inv_gain, r)), self.syntax.decompress(strings["syntax"])


def estimate_bits(likelihoods: dict[str, Tensor]) -> dict[str, Tensor]:
    """Estimated bits per stream and image: ``{name: (B,) tensor}`` = sum of -log2(likelihood)."""
    return {k: (-torch.log2(v)).flatten(1).sum(1) for k, v in likelihoods.items()}
