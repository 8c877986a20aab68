"""`testing`-mode domains checked in shadow by the probe, and their sessions relabelled."""
