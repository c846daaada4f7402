"""The response cache: answers to identical (or, in semantic mode, similar) requests served
again, per route, shared through the state backend, accounted (docs: README "Response
cache")."""

from turnout.cache.backends import CacheUnavailable
from turnout.cache.control import Directives, directives
from turnout.cache.entry import Entry
from turnout.cache.service import BYPASS, HIT, MISS, SIMILAR, Lookup, ResponseCache, Rule

__all__ = [
    "BYPASS",
    "HIT",
    "MISS",
    "SIMILAR",
    "CacheUnavailable",
    "Directives",
    "Entry",
    "Lookup",
    "ResponseCache",
    "Rule",
    "directives",
]
