"""The batch client behind ``asrgw transcribe``: files or folders in, transcripts out."""
