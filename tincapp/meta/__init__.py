"""The meta protocol (TCP, protocol 17.7): request texts, the per-connection state machine and
the seen-requests cache. Sans-I/O throughout: no sockets, no clock, no global randomness."""
