"""Security: sign-in (OAuth 2.0 / SMART on FHIR v2), access policies, consent, break-the-glass, audit."""
