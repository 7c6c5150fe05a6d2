"""The node agent: runs the workloads the control plane assigns to this node and reports their state."""
