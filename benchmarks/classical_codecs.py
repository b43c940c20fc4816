"""Rate range, quality and speed of the classical codecs at the quick profile's rate points, on Kodak.

    python benchmarks/classical_codecs.py                    # all 24 Kodak images, codecs of config/config.yaml
    python benchmarks/classical_codecs.py --images 4 --codecs heic jpegxl

For every classical codec of the config that runs here (BPG/VTM only when installed), at each of its
configured rates: mean / min / max bpp over the images (from the real bytes), mean RGB PSNR, and the mean
encode / decode wall time per image (one warm-up encode first). Then the HEVC-intra codec (``heic``)
against CompressAI's published BPG curve (same codec family, 4:4:4, x265): PSNR difference at equal bpp
on the published curve's bpp range and the BD-rate (pchip, published BPG as anchor), via
:func:`baselines.published.published_twin_diff`. Saved to ``benchmarks/results/classical_codecs.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from baselines.published import load_published, published_twin_diff  # noqa: E402
from benchmarks._psnr import psnr  # noqa: E402
from benchmarks._results import save  # noqa: E402
from cgdm.harness.codecs import CodecUnavailable, make_codec  # noqa: E402
from cgdm.imageio import list_images, load_image  # noqa: E402

BPG_PUBLISHED = "compressai/kodak/bpg_444_x265_ycbcr.json"


def _payload_bytes(data: bytes) -> int:
    """Bytes of a file without its ISOBMFF container (the mdat payload of a .heic; the whole file for
    formats without one). Diagnostic only: the benchmark's bpp always counts the whole file."""
    if data[4:8] != b"ftyp":
        return len(data)
    pos = 0
    while pos + 8 <= len(data):
        size, box = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if box == b"mdat":
            return size - 8
        pos += size
    return len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--images", type=int, default=24, help="first N Kodak images (default: all 24)")
    ap.add_argument("--codecs", nargs="*", help="codec names of the config (default: every classical one)")
    ap.add_argument("--out-name", default="classical_codecs", help="benchmarks/results/<name>.json")
    args = ap.parse_args(argv)

    cfg = yaml.safe_load(Path(args.config).read_text())
    entries = {n: e for n, e in cfg["codecs"].items() if e["class"].startswith("baselines.classical.")}
    if args.codecs:
        unknown = set(args.codecs) - set(entries)
        if unknown:
            ap.error(f"not classical codecs of {args.config}: {sorted(unknown)}")
        entries = {n: entries[n] for n in args.codecs}
    paths = list_images(REPO / "data" / "kodak")[: args.images]
    images = {p.stem: load_image(p) for p in paths}

    rows, summary, versions, unavailable = [], [], {}, {}
    for name, entry in entries.items():
        codec = make_codec(name, entry)
        try:
            codec.check_available()
        except CodecUnavailable as exc:
            unavailable[name] = str(exc).splitlines()[0]
            print(f"{name:<10} unavailable: {unavailable[name][:150]}")
            continue
        versions[name] = codec.version
        first = next(iter(images.values()))
        codec.decode(codec.encode(first, entry["rates"][0]))   # warm-up (library initialisation)
        for rate in entry["rates"]:
            for stem, img in tqdm(images.items(), desc=f"{name} {rate}", leave=False):
                t0 = time.perf_counter()
                data = codec.encode(img, rate)
                t1 = time.perf_counter()
                rec = codec.decode(data)
                t2 = time.perf_counter()
                rows.append({"codec": name, "rate": rate, "image": stem, "metric": "psnr", "status": "ok",
                             "bpp": 8 * len(data) / (img.shape[0] * img.shape[1]), "value": psnr(rec, img),
                             "encode_s": t1 - t0, "decode_s": t2 - t1,
                             "payload_bpp": 8 * _payload_bytes(data) / (img.shape[0] * img.shape[1])})
            r = pd.DataFrame([x for x in rows if x["codec"] == name and x["rate"] == rate])
            summary.append({"codec": name, "rate": rate, "bpp_mean": r["bpp"].mean(), "bpp_min": r["bpp"].min(),
                            "bpp_max": r["bpp"].max(), "psnr_mean": r["value"].mean(),
                            "encode_s_mean": r["encode_s"].mean(), "decode_s_mean": r["decode_s"].mean()})
            s = summary[-1]
            print(f"{name:<10} {str(rate):>6}  bpp {s['bpp_mean']:.4f} [{s['bpp_min']:.4f}, {s['bpp_max']:.4f}]"
                  f"  PSNR {s['psnr_mean']:.2f} dB  enc {s['encode_s_mean']:.3f} s  dec {s['decode_s_mean']:.3f} s")

    df = pd.DataFrame(rows)
    ranges = (pd.DataFrame(summary).groupby("codec")
              .agg(lowest_mean_bpp=("bpp_mean", "min"), highest_mean_bpp=("bpp_mean", "max"),
                   encode_s_per_image=("encode_s_mean", "mean"), decode_s_per_image=("decode_s_mean", "mean"))
              .reset_index()) if summary else pd.DataFrame()
    twin = None
    if "heic" in set(df.get("codec", [])) and len(images) == 24:
        ours = df[df["codec"] == "heic"].drop(columns=["encode_s", "decode_s"])
        published = load_published({"source": BPG_PUBLISHED, "dataset": "kodak"})
        # whole files (the suite's rate), and, to tell the container's share of the gap, HEVC payload only
        twin = pd.concat([
            published_twin_diff(ours.drop(columns="payload_bpp"), published, metrics=("psnr",))
            .assign(rate="whole .heic file"),
            published_twin_diff(ours.assign(bpp=ours["payload_bpp"]).drop(columns="payload_bpp"), published,
                                metrics=("psnr",)).assign(rate="HEVC payload only (mdat), diagnostic"),
        ], ignore_index=True)
        for t in twin.itertuples():
            print(f"HEVC intra (heic) vs published BPG 4:4:4 on Kodak, {t.rate}: {t.points} points in BPG's "
                  f"bpp range, mean PSNR difference {t.mean_delta:+.3f} dB, BD-rate {t.bd_rate_percent:+.2f} %, "
                  f"BD-PSNR {t.bd_metric:+.3f} dB")
    save(args.out_name, {"images": len(images), "versions": versions, "unavailable": unavailable,
                         "per_rate": summary, "ranges": ranges, "heic_vs_bpg_published": twin})
    return 0


if __name__ == "__main__":
    sys.exit(main())
