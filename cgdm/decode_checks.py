"""Checks before decoding a ``.cgdm`` file of the base codec (and of full CGDM, which decodes its base
streams the same way): the pixel budget, the stream lengths against the model's CDF tables and the
memory the decode must hold at once. :func:`check_decode_resources` runs them cheapest first; the base
coder (:mod:`cgdm.coder`) and full CGDM (:mod:`cgdm.model`) call it before any entropy decoding.

torch and the codec are imported inside the functions: :mod:`cgdm.coder` imports this module, and
``cgdm info`` answers without loading torch.
"""

from __future__ import annotations

from cgdm.bitstream import MAX_PIXELS, CGDMHeader, CorruptedFile, ResourceLimit, check_pixel_budget

__all__ = ["BASE_STREAMS", "available_memory", "check_decode_resources", "estimate_decode_bytes",
           "min_stream_bytes"]

#: section name of a .cgdm file -> stream name of :class:`cgdm.codec.BaseCodec`
BASE_STREAMS = {"main": "y", "hyper": "z", "syntax": "syntax"}


def _min_bits_per_symbol(entropy_model) -> list[float]:
    """Per distribution (CDF row) of a CompressAI entropy model: the fewest bits any symbol can cost,
    log2(2^16 / largest quantised frequency)."""
    import torch  # lazy: see the module docstring

    cdf = entropy_model._quantized_cdf.long()
    lengths = entropy_model._cdf_length.long()
    freqs = cdf[:, 1:] - cdf[:, :-1]
    valid = torch.arange(freqs.shape[1])[None, :] < (lengths[:, None] - 1)
    top = torch.where(valid, freqs, torch.zeros_like(freqs)).amax(1).clamp_min(1).double()
    return (16 - torch.log2(top)).tolist()


def min_stream_bytes(model, height: int, width: int) -> dict[str, int]:
    """A sound lower bound on the length of each stream of a ``height`` x ``width`` image, from the
    model's CDF tables: rANS encoding multiplies its state by at least 2^16 / freq >= 2^c_min per symbol
    (less a rounding loss < 5e-5 bits) and the final flush writes 64 bits, so a stream of n symbols has
    at least n * (c_min - 1e-4) - 64 bits. Usually weak (a flat image is legitimately tiny) but free."""
    (hy, wy), (hz, wz) = model.latent_shapes((height, width))
    z_cost = sum(_min_bits_per_symbol(model.entropy_bottleneck)) * hz * wz
    y_cost = max(0.0, min(_min_bits_per_symbol(model.gaussian_conditional)) - 1e-4) * model.M * hy * wy
    s_cost = sum(_min_bits_per_symbol(model.syntax.entropy_bottleneck))
    n = {"hyper": model.N * hz * wz, "main": model.M * hy * wy, "syntax": model.syntax_dim}
    bits = {"hyper": z_cost - 1e-4 * n["hyper"], "main": y_cost, "syntax": s_cost - 1e-4 * n["syntax"]}
    return {name: max(8, 4 * int((b - 64) // 32)) for name, b in bits.items()}


def estimate_decode_bytes(model, height: int, width: int, features: bool = False) -> int:
    """Memory (bytes) that :meth:`BaseCodec.decompress` plus the conversion to uint8 must hold at once,
    deliberately counted low so that a refusal is always right (the real peak is higher; see
    ``benchmarks/decode.py``): the float output and the uint8 image (15 B per pixel), the features
    (N / 4 floats per pixel) if kept, per latent symbol (M / 256 per padded pixel) the decoded value,
    mean and scale (12 B) and the index and value lists CompressAI builds in Python (>= 16 B), and
    300 MB for the runtime and weights."""
    from cgdm.codec import PAD_MULTIPLE  # lazy: cgdm.codec imports torch and CompressAI (module docstring)

    hp, wp = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    total = 15 * height * width + 28 * model.M * hp * wp // 256
    if features:
        total += model.N * hp * wp
    return total + (300 << 20)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the free address space under RLIMIT_AS and
    the system's MemAvailable (None when neither is known)."""
    limits = []
    try:
        import resource  # lazy: Unix only (the ImportError below elsewhere)

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                vm = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
            limits.append(soft - vm)
    except (ImportError, OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
        if avail is not None:
            limits.append(avail)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_decode_resources(model, header: CGDMHeader, sections: dict[str, bytes], max_pixels: int | None = MAX_PIXELS,
                           extra_bytes: int = 0, features: bool = False) -> None:
    """Everything that can be said about a file before decoding it, cheapest first; raises
    :class:`~cgdm.bitstream.ResourceLimit` or :class:`~cgdm.bitstream.CorruptedFile`.

    1. the pixel budget (:func:`~cgdm.bitstream.check_pixel_budget`);
    2. every stream is whole 32-bit words (CompressAI's coder writes nothing else) and at least as long
       as the fewest bytes that can hold the declared image's symbols (:func:`min_stream_bytes`);
    3. the memory the decode must hold at once (:func:`estimate_decode_bytes` + ``extra_bytes``, for the
       diffusion decoder) fits in :func:`available_memory`.
    """
    check_pixel_budget(header, max_pixels)
    missing = [name for name in BASE_STREAMS if name not in sections]
    if missing:
        raise CorruptedFile(f"file lacks the sections {missing} that the base codec needs")
    for name in BASE_STREAMS:
        n = len(sections[name])
        if n < 8 or n % 4:
            raise CorruptedFile(f"section {name!r} has {n} bytes; a range-coded stream is at least two 4-byte "
                                "words and a whole number of them")
    for name, least in min_stream_bytes(model, header.height, header.width).items():
        if len(sections[name]) < least:
            raise CorruptedFile(f"corrupted file: section {name!r} has {len(sections[name])} bytes, but a "
                                f"{header.width}x{header.height} image needs at least {least} with this model")
    need = estimate_decode_bytes(model, header.height, header.width, features) + extra_bytes
    free = available_memory()
    if free is not None and need > free:
        raise ResourceLimit(f"decoding the {header.width}x{header.height} image needs at least {need / 2**30:.1f} GiB, "
                            f"but only {free / 2**30:.1f} GiB are available (free memory / address-space limit)")
