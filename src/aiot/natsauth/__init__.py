"""Who may connect to NATS: user sources registered by components, applied by the NATS auth service."""
