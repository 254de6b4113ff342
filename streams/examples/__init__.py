"""Stream processors written on :mod:`evstream.streams.app`, each run by a test."""
