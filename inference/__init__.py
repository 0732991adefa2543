"""The inference node: audio decoding, FunASR and PocketSphinx engines, the node HTTP service.

The gateway imports three modules only: ``inference.protocol`` (the wire format; pydantic alone),
``inference.containers`` (the whitelist of accepted containers its probe shares with the node's
decoder; the standard library, and PyAV once a file is opened) and ``inference.addresses`` (which
bind addresses are loopback; the standard library).
"""
