"""Wire formats. Each dialect is pure: encode and decode functions, no I/O, no globals."""
