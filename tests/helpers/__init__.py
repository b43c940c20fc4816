"""Helpers shared by the test modules (no tests here).

* :mod:`helpers.loopback`: the loopback HTTP server behind the ``http_server`` fixture (conftest.py).
* :mod:`helpers.diffusion`: tiny random CGDM parts for the diffusion-decoder tests.
* :mod:`helpers.evaluation`: random metric weights in the cache layout, encode tables with reconstructions.
* :mod:`helpers.workflow`: one real run of the tiny ``.test`` workflow per session, and how to run snakemake.
* :mod:`helpers.report_browser`: the Snakemake HTML report rendered by headless Chromium.

``tests/`` is on ``sys.path`` while pytest runs (rootdir conftest), so test modules import these as
``from helpers.diffusion import tiny_cgdm``. conftest.py registers the package for pytest's assertion
rewriting, so a failing ``assert`` in a helper reports its values like one in a test.
"""
