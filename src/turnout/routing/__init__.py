"""Routing: which models a request may go to, and in what order."""

from turnout.routing.planner import Plan, Planner
from turnout.routing.targets import Target

__all__ = ["Plan", "Planner", "Target"]
