"""The benchmark harness: the one codec interface (:mod:`cgdm.harness.codecs`) and CGDM's workflow codecs
(:mod:`cgdm.harness.cgdm_codecs`). The core (networks, bitstream, zoo, trainers) never imports it; baselines,
evaluation, the command line and the workflow build on it."""
