"""Inbound adapters (HL7 v2 over MLLP, CDA documents and MHD, CSV uploads), subscriptions and federation.

See docs/exchange.md. The HL7 v2 path: er7 (parse) -> v2fhir (map) -> intake/inbox (store, durably)
-> ack; mllp is the listener; service wires it onto a platform.
"""
