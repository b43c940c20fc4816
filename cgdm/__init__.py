"""CGDM benchmark and reproducibility suite.

The package holds the CGDM codec (base codec, neural syntax, diffusion post-processor, consistency
branch, SFF, boundary control, online mode) and the evaluation code. Every module is importable
without Snakemake so the same functions run from the CLI, the tests and the workflow.
"""

__version__ = "0.1.0"
