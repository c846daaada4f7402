"""The `upgrade-rollback` scenario: its config.yaml, traffic.py, figures.py and expect.yaml."""
