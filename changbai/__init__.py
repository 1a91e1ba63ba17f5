"""Changbai: a regional health information platform on FHIR R4 (4.0.1)."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
