"""settings: see docs/architecture.md for what lives in this layer."""
