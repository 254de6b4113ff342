"""Event models (pydantic), their Avro history, the codec and compatibility checks.

Empty until the schemas issue lands; the package exists so the layout and imports are fixed.
"""

__all__: list[str] = []
