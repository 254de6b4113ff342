"""EventProducer (sync and async), transactional publish, the publish CLI and the HTTP gateway.

Empty until the producers issue lands; the package exists so the layout and imports are fixed.
"""

__all__: list[str] = []
