"""Event models (pydantic), their committed Avro history, compatibility checks and the codec."""

from evstream.schemas.catalog import Catalog, load_catalog, validate_event
from evstream.schemas.codec import AvroCodec, RecordCoordinates, RegistrySchemaStore, SchemaStore
from evstream.schemas.compat import Incompatibility, incompatibilities
from evstream.schemas.events import Compatibility, Envelope, Event, Record, SubjectStrategy, subject_name
from evstream.schemas.history import SchemaHistory, SubjectReport, bump, check
from evstream.schemas.ids import derived_event_id
from evstream.schemas.reading import EventReader, event_type_header
from evstream.schemas.register import Registered, register_catalog

__all__ = [
    "AvroCodec",
    "Catalog",
    "Compatibility",
    "Envelope",
    "Event",
    "EventReader",
    "Incompatibility",
    "Record",
    "RecordCoordinates",
    "Registered",
    "RegistrySchemaStore",
    "SchemaHistory",
    "SchemaStore",
    "SubjectReport",
    "SubjectStrategy",
    "bump",
    "check",
    "derived_event_id",
    "event_type_header",
    "incompatibilities",
    "load_catalog",
    "register_catalog",
    "subject_name",
    "validate_event",
]
