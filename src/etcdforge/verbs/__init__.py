"""The verbs: one package per verb, each with its pure planner (``plan``) and its runner (``run``):
observe → plan → execute once through :mod:`etcdforge.executor` on the :mod:`etcdforge.runtime`.

``up`` (also ``down`` and ``destroy`` of a local workspace), ``apply`` (and ``plan``) on hosts,
``member`` (add, remove, replace), ``renew``, ``rotate_ca``, ``adopt``; and the smaller ``init``,
``pki_check``, ``pki_import`` and ``query``.
"""
