"""The `scout-primary` scenario: its config.yaml, traffic.py, figures.py and expect.yaml."""
