"""HTTP, protocol-level and pure: what the proxy adapters (addons/) translate with.

    operation.py  an HTTP request -> the Operation the gate decides on
    media.py      what to do with a body under mask rules that cannot read it
"""
