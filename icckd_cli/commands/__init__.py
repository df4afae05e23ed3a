"""commands: what each command does; see docs/architecture.md for what lives in this layer."""
