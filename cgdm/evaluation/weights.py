"""``python -m cgdm.evaluation.weights [--fetch | --list]``: fetch, verify or list the weight files of the
learned metrics. The table, the checks and the fetcher are the core module :mod:`cgdm.weights` (the decoder
trainer's LPIPS-VGG loss uses them too); this module is the command the workflow and the README name."""

from __future__ import annotations

import sys

from cgdm.weights import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
