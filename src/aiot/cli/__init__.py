"""The `aiot` command line (typer)."""
