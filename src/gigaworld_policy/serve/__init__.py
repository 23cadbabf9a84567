"""Deployment: policy server (server.py), numpy-only client (client.py), wire codec (protocol.py),
action-chunk executor for the robot loop (executor.py), open-loop replay (replay.py).

Keep this package import torch-free: the robot-side client imports it.
"""
