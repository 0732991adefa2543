"""The MD5-keyed result cache: repeated audio is answered without a node."""
