"""The engine under :class:`evstream.streams.App`: the record processor (:mod:`.processor`), the
Kafka loop (:mod:`.runner`), commits and transactions (:mod:`.commits`), recovery (:mod:`.recovery`)."""
