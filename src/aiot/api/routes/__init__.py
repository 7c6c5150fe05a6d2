"""API routers, one module per resource; each route declares its audience (see aiot.api.security)."""
