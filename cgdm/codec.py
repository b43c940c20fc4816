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

from cgdm.syntax import NeuralSyntax

__all__ = ["ARCH", "PAD_MULTIPLE", "BaseCodec", "NearestScaleGaussianConditional", "estimate_bits"]

#: architecture identifier stored in checkpoints and (as a code) in .cgdm headers
ARCH = "cgdm-base-vr-mshp"
#: total stride of the analysis (16) times the hyper analysis (4)
PAD_MULTIPLE = 64
#: levels of the Gaussian conditional's scale table (CompressAI: 64). With nearest-scale indexing
#: (NearestScaleGaussianConditional) 128 levels put the y stream within ~0.05 % of its estimate.
SCALE_TABLE_LEVELS = 128


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
                   image_size: tuple[int, int]) -> dict:
        """Inverse of :meth:`compress`. Returns ``x_hat`` (clamped to [0, 1]), ``features``, ``syntax``."""
        for key in ("y", "z", "syntax"):
            if key not in strings:
                raise ValueError(f"missing stream {key!r}")
        batch = len(strings["z"])
        if not (len(strings["y"]) == len(strings["syntax"]) == batch):
            raise ValueError("streams y, z and syntax must hold one string per image each")
        device = next(self.parameters()).device
        r = self._rate_index(rate_idx, batch, device)
        _, z_shape = self.latent_shapes(image_size)
        z_hat = self.entropy_bottleneck.decompress(strings["z"], z_shape)
        scales_hat, means_hat = self.h_s(z_hat * self._gain(self.log_hyper_inv_gain, r)).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_hat = self.gaussian_conditional.decompress(strings["y"], indexes, means=means_hat)
        syntax_hat = self.syntax.decompress(strings["syntax"])
        x_hat, features = self._synthesize(y_hat * self._gain(self.log_inv_gain, r), syntax_hat, tuple(image_size))
        return {"x_hat": x_hat.clamp_(0, 1), "features": features, "syntax": syntax_hat.flatten(1)}


def estimate_bits(likelihoods: dict[str, Tensor]) -> dict[str, Tensor]:
    """Estimated bits per stream and image: ``{name: (B,) tensor}`` = sum of -log2(likelihood)."""
    return {k: (-torch.log2(v)).flatten(1).sum(1) for k, v in likelihoods.items()}
