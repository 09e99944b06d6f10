"""What the edge's TLS port learns from a connection before it decides where the connection goes.

``clienthello`` parses the client's first flight, sans-IO: SNI and ALPN, or how many bytes it
still needs, or "this is not TLS". ``peek`` reads that flight off an accepted socket without
consuming it, so TLS termination or a pass-through relay still sees the hello from byte 0.
"""
