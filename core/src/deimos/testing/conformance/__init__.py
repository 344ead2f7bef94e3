"""Shared conformance suites: every plugin of a kind (built-in or third-party) subclasses the
suite of its kind in its own tests, so all of them keep the same contract.

``from deimos.testing.conformance.schema import SchemaBackendConformance``
"""
