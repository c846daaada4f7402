"""Accounting: prices and cost, the per-request ledger, gateway keys, budgets, reports."""
