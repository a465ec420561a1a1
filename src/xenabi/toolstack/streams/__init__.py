"""Xen's save and migration streams: xl header, libxl v2, libxc v3 (``spec/streams.md``), written and read."""
