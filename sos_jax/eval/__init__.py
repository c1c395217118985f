"""Evaluation on the host: pass@k, token budgets, trace-format checks, reports and plots."""
