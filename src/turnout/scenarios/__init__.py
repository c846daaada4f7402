"""Runnable scenarios: the production stories turnout exists for, replayed in one process on
simulated time (turnout.clock), each with its figures and the outcome it must show.

- catalogue.py: the scenario folders beside this module and their contract
- traffic.py: what a traffic script is made of (Call, Change) and day-of-traffic helpers
- runner.py: the gateway, its sim upstreams and the client traffic, played at a speed
- live.py: the short live view while it runs
- report.py: the figures and their table / JSON / HTML renderings; expect.py: the checks
"""
