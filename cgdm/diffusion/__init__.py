"""Diffusion post-processor: the denoising network (:mod:`.unet`) and the weight-free noise schedule
and sampler (:mod:`.scheduler`), kept apart as in diffusers."""

from cgdm.diffusion.scheduler import DDIMSampler, NoiseSchedule, sampling_timesteps
from cgdm.diffusion.unet import ConditionalUNet

__all__ = ["ConditionalUNet", "DDIMSampler", "NoiseSchedule", "sampling_timesteps"]
