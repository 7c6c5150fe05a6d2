"""AIoT platform: serve ML models, register IoT devices, schedule apps onto a cluster."""

__version__ = "0.1.0"
