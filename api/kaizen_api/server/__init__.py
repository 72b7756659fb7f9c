"""The REST facade (FastAPI): tenancy, identity, RBAC by impersonation, audit."""
