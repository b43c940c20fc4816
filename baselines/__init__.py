"""Every codec the suite compares, behind the one interface in :mod:`cgdm.harness.codecs`."""
