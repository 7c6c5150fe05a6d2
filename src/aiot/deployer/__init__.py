"""Turns models and app instances into workloads, places them on nodes, and moves them off lost nodes."""
