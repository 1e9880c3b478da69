"""``etcdforge doctor``'s judgement: facts gathered by :mod:`etcdforge.verbs.doctor` in, findings out.

Pure: nothing here does I/O, so each rule is tested on hand-built facts and, in the integration tests,
on a cluster broken for real.
"""
