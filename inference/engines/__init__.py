"""Speech recognition engines behind one small interface (``Engine``)."""
