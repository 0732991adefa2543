"""The inference node: audio decoding, FunASR and PocketSphinx engines, the node HTTP service.

``inference.protocol`` is the only module the gateway imports; it needs pydantic alone.
"""
