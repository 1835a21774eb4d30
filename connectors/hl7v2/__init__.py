"""HL7 v2 over MLLP: the connector kind "hl7v2-mllp" and its conversion maps generated from the v2-to-FHIR IG."""
