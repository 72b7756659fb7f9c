"""A throwaway local PostgreSQL server (Debian's packages) for tests and `make dev`."""
