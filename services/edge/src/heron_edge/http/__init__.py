"""The L7 proxy: HTTP/1.1 from clients (TLS terminated by the SNI router) to targets through the tunnel."""
