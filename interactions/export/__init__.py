"""FHIR Bulk Data Access 2.0 export served by Hearth (docs/bulk-export.md).

`params` reads a kick-off into a job's plan, `jobs` is the durable job model, `selection` turns a plan into the
searches each type is read with, `files` writes NDJSON files, `worker` runs jobs under a lease, `operations`
answers kick-off, status, cancel and downloads, and `service` ties them to a context and the server's life.
"""
