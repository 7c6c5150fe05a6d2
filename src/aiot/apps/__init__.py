"""App instances: binding an app to a location's devices and models, and running it as a workload."""
