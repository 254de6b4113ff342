"""faust-streaming apps for the demo domain on the schemas codec, tables, windows, workers.

Empty until the streams issue lands; the package exists so the layout and imports are fixed.
"""

__all__: list[str] = []
