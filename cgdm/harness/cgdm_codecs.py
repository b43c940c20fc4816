"""CGDM in the suite's codec table: the workflow adapters of the core's coders.

* :class:`CGDMBaseCodec`: the base codec alone (:class:`cgdm.coder.BaseCoder`), ``.cgdm`` files with
  model id ``cgdm-base-vr-mshp``.
* :class:`CGDMCodec`: full CGDM (:class:`cgdm.model.CGDM`: base codec + diffusion decoder, ablation
  variants).

Both are :class:`~cgdm.harness.codecs.Codec` subclasses built by :func:`~cgdm.harness.codecs.make_codec`
from a ``codecs:`` entry. Weights the zoo cannot provide (:class:`cgdm.zoo.WeightsUnavailable`) and
checkpoints that do not load are reported as :class:`~cgdm.harness.codecs.CodecUnavailable`, so the
workflow records the codec as skipped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgdm import __version__
from cgdm.coder import MODEL_ID, BaseCoder
from cgdm.harness.codecs import Codec, CodecUnavailable
from cgdm.model import CGDM, base_lambdas, load_base, load_decoder
from cgdm.sampling_options import SamplingOptions
from cgdm.variants import Variant
from cgdm.zoo import CheckpointError, WeightsUnavailable

__all__ = ["CGDMBaseCodec", "CGDMCodec"]


class CGDMBaseCodec(Codec):
    """The base codec alone (no diffusion decoder) as a workflow codec.

    Config entry::

        cgdm_base:
          class: cgdm.harness.cgdm_codecs.CGDMBaseCodec
          rates: [0, 1, 2, 3]          # rate indices of the variable-rate model
          models: {base: cgdm_base}    # a trained model of the config's models: section (or a zoo name)
    """

    kind = "cgdm"
    extension = ".cgdm"

    def __init__(self, name: str, models: dict[str, str] | None = None, device: str = "cpu", **params):
        super().__init__(name, models=models, device=device, **params)
        self._coder: BaseCoder | None = None

    def _load(self) -> BaseCoder:
        if self._coder is None:
            spec = self.models.get("base")
            if not spec:
                raise CodecUnavailable(f"codec {self.name!r}: needs models: {{base: <trained model>}} in the config")
            try:
                self._coder = BaseCoder.from_checkpoint(spec, self.device)
            except CheckpointError as exc:
                raise CodecUnavailable(f"codec {self.name!r}: {exc}") from exc
            except WeightsUnavailable as exc:  # the zoo's reason, worded as before
                raise CodecUnavailable(str(exc)) from exc
        return self._coder

    def check_available(self) -> None:
        self._load()

    @property
    def version(self) -> str:
        return f"cgdm-suite {__version__} ({MODEL_ID})"

    @property
    def weights(self) -> str:
        meta = self._load().meta
        return f"trained-here:{meta['steps']}:{meta['weights_sha256'][:12]}"

    def encode(self, image: np.ndarray, rate) -> bytes:
        return self._load().encode(image, int(rate))

    def decode(self, data: bytes) -> np.ndarray:
        return self._load().decode(data)


class CGDMCodec(Codec):
    """CGDM in the suite's codec table.

    Config entry::

        cgdm:
          class: cgdm.harness.cgdm_codecs.CGDMCodec
          rates: [0, 1, 2, 3]                 # rate indices of the base codec
          models: {base: cgdm_base, decoder: cgdm_decoder}
          params: {variant: full, steps: 4, seed: 0, tile: 256, overlap: 32, online_steps: 0}

    ``variant`` must match the decoder checkpoint for ``no_consistency`` / ``no_sff`` (those are trained
    variants); ``no_boundary`` works with the full decoder.
    """

    kind = "cgdm"
    extension = ".cgdm"

    def __init__(self, name: str, models: dict[str, str] | None = None, device: str = "cpu",
                 variant: str = "full", steps: int = 4, t0: int | None = None, seed: int = 0, tile: int = 512,
                 overlap: int = 64, guidance: float = 1.0, bound: float = 0.02, eta: float = 1.0, batch: int = 4,
                 online_steps: int = 0, online_lr: float = 0.05, threads: int | None = None, **params: Any):
        super().__init__(name, models=models, device=device, **params)
        if params:
            raise TypeError(f"codec {name!r}: unknown CGDM params {sorted(params)}")
        self.variant = Variant.from_name(variant)
        self.options = SamplingOptions(steps, t0, seed, tile, overlap, guidance, bound, eta)
        self.batch = batch
        self.online_steps = int(online_steps)
        self.online_lr = float(online_lr)
        self.threads = threads
        self._model: CGDM | None = None
        self._meta: dict = {}

    def check_available(self) -> None:
        for role in ("base", "decoder"):
            if role not in self.models:
                raise CodecUnavailable(f"codec {self.name!r} needs models: {{{role}: <model name>}} in its config "
                                       "entry")
            if not Path(self.models[role]).is_file():
                raise CodecUnavailable(f"codec {self.name!r}: {role} checkpoint {self.models[role]} is missing; "
                                       "train it with the workflow (rule train_model)")

    def model(self) -> CGDM:
        if self._model is None:
            self.check_available()
            if self.threads:
                torch.set_num_threads(int(self.threads))
            dec, meta = load_decoder(self.models["decoder"], self.device)
            dv = dec.config.variant
            if (dv.consistency, dv.sff) != (self.variant.consistency, self.variant.sff):
                raise ValueError(
                    f"codec {self.name!r}: variant {self.variant.name!r} but decoder checkpoint "
                    f"{self.models['decoder']} was trained as {dv.name!r}; point models.decoder at the "
                    f"decoder trained with variant {replace(self.variant, boundary=True).name!r}")
            self._meta = meta
            try:
                base, base_meta = load_base(self.models["base"], self.device)
            except WeightsUnavailable as exc:  # the zoo's reason, worded as before
                raise CodecUnavailable(str(exc)) from exc
            self._model = CGDM(base, dec, self.options, boundary=self.variant.boundary, batch=self.batch,
                               lambdas=base_lambdas(base_meta)).to(self.device)
        return self._model

    @property
    def version(self) -> str:
        return f"cgdm-suite {__version__} ({self.variant.name})"

    @property
    def weights(self) -> str:
        m = self.model()
        # the decoder's training losses are part of what the weights are (provenance of every result row)
        losses = "+".join(self._meta.get("losses") or ["diffusion"] + (["lpips"] if self._meta.get("lpips") else []))
        return f"trained-here:{self._meta.get('steps', 0)}:{m.weights_hash.hex()}:losses={losses}"

    def encode(self, image: np.ndarray, rate: Any) -> bytes:
        with torch.inference_mode(self.online_steps == 0):
            return self.model().compress(image, int(rate), online_steps=self.online_steps, lr=self.online_lr)

    def decode(self, data: bytes) -> np.ndarray:
        with torch.inference_mode():
            return self.model().decompress(data)
