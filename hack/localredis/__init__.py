"""A throwaway local Redis server (Debian's ``redis-server``) for tests and `make dev`."""
