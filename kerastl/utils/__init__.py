"""Small utilities every layer uses: atomic writes, console and native logs,
text tables, downloads, devices and distribution."""
