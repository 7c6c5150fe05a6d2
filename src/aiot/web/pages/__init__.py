"""Page routers, one module per area (auth, admin, models, developer, store, deployments, logs, health)."""
