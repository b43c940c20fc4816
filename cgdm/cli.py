"""``cgdm`` command line: one sub-command per task, each a ``main(argv)`` in its own module.

The modules are imported lazily so ``cgdm info`` does not pay for importing every network.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "compress": ("cgdm.cli_codec", "compress_main", "encode an image to a .cgdm file"),
    "decompress": ("cgdm.cli_codec", "decompress_main", "decode a .cgdm file to PNG"),
    "info": ("cgdm.cli_codec", "info_main", "print the header of a .cgdm file"),
    "redecode": ("cgdm.redecode", "main", "rewrite a .cgdm file's decoding settings (seed, guidance, ...)"),
    "train": ("cgdm.cli_train", "train_main", "train one model from a YAML file or a spec (also the workflow step)"),
    "bd-rate": ("cgdm.evaluation.bdrate", "main", "BD-rate between two RD curves"),
    "download": ("cgdm.cli_datasets", "download_main", "download and verify a dataset"),
    "encode": ("cgdm.pipeline", "main", "encode a dataset with one codec at one rate (workflow step)"),
    "zoo-ship": ("cgdm.cli_train", "zoo_ship_main", "copy trained models into zoo/ (workflow step)"),
    "zoo-extend": ("cgdm.cli_train", "zoo_extend_main", "continue training shipped models from their weights"),
    "zoo-train": ("cgdm.cli_train", "zoo_train_main", "train every shipped model into zoo/ without Snakemake (GPU)"),
}


def _usage() -> str:
    lines = ["usage: cgdm <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "Run 'cgdm <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"cgdm: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[argv[0]]
    rc = getattr(importlib.import_module(module), func)(argv[1:])
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
