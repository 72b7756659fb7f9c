"""The ``kaizen`` command-line tool."""
