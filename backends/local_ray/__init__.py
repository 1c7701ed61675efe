"""Local Ray Serve backend: emulates Modal's per-experiment container pools and scaledown windows."""
