"""Routing: which models a request may go to, and in what order."""

from turnout.routing.planner import Plan, Planner, Target

__all__ = ["Plan", "Planner", "Target"]
