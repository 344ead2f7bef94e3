"""The deimos demo service (``deimos demo``)."""
