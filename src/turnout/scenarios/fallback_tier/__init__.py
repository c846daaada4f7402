"""The `fallback-tier` scenario: its config.yaml, traffic.py, figures.py and expect.yaml."""
