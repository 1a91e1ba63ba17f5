"""The synthetic Jilin province: residents, facilities, care, outbreaks and claims as FHIR R4 NDJSON,
with ground truth for what later modules must find. Entry point: :func:`generate`."""

from changbai.synth.province import generate

__all__ = ["generate"]
