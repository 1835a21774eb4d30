"""SMART on FHIR security: scopes and grants, the policy the dispatcher consults, tokens and the built-in
authorization server's records (docs/security.md)."""
