"""Devices: the subject scheme and permissions (`subjects`), ingest (`ingest`) and simulators (`simulators`).

Import submodules directly; this package imports nothing so that a light consumer (the SDK importing
`subjects`) does not pull in NATS, Prometheus or OpenCV.
"""
