"""Event models (pydantic), their committed Avro history, compatibility checks and the codec."""

from schemas.catalog import Catalog, load_catalog, validate_event
from schemas.codec import AvroCodec, RecordCoordinates, RegistrySchemaStore, SchemaStore
from schemas.compat import Incompatibility, incompatibilities
from schemas.events import Compatibility, Envelope, Event
from schemas.history import SchemaHistory, SubjectReport, bump, check
from schemas.register import Registered, register_catalog

__all__ = [
    "AvroCodec",
    "Catalog",
    "Compatibility",
    "Envelope",
    "Event",
    "Incompatibility",
    "RecordCoordinates",
    "Registered",
    "RegistrySchemaStore",
    "SchemaHistory",
    "SchemaStore",
    "SubjectReport",
    "bump",
    "check",
    "incompatibilities",
    "load_catalog",
    "register_catalog",
    "validate_event",
]
