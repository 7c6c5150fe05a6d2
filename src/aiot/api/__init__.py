"""HTTP API of the control plane (FastAPI): routes, authentication, errors and metrics."""
