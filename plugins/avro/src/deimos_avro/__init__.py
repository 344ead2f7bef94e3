"""Avro schema backends for deimos."""
