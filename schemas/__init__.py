"""Event models (pydantic), their Avro history, the codec and compatibility checks.

So far: the Confluent wire-format Avro codec. Event models, the committed schema history and the
compatibility gate follow (schemas issue).
"""

from schemas.codec import AvroCodec, RecordCoordinates, RegistrySchemaStore, SchemaStore

__all__ = ["AvroCodec", "RecordCoordinates", "RegistrySchemaStore", "SchemaStore"]
