"""The directory ``claude-exporter run`` puts on ``PYTHONPATH``; its ``sitecustomize`` instruments programs.

A package only so that it ships with the wheel; nothing imports it by this name.
"""
