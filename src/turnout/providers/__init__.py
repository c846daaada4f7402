"""Transports to upstream models: pooled HTTP, the in-process local model, the simulator."""
