"""Consumer-group runner, dispatch, retries and dead letters, dedupe, request-reply, replay, lag.

Empty until the consumer groups issue lands; the package exists so the layout and imports are fixed.
"""

__all__: list[str] = []
