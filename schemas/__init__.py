"""Event models (pydantic), their committed Avro history, compatibility checks and the codec."""

from evstream.schemas.catalog import Catalog, load_catalog, validate_event
from evstream.schemas.codec import AvroCodec, RecordCoordinates, RegistrySchemaStore, SchemaStore
from evstream.schemas.compat import Incompatibility, incompatibilities
from evstream.schemas.events import Compatibility, Envelope, Event
from evstream.schemas.history import SchemaHistory, SubjectReport, bump, check
from evstream.schemas.register import Registered, register_catalog

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
