"""Observation: what is on the hosts (``hosts``) and on hand-built clusters (``adopted``), gathered in
one round trip per host and parsed into plain data the planners read."""
