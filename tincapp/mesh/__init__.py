"""The mesh: who exists, how they are linked, who is reachable, who owns which subnet.

Sans-I/O: `graph` (nodes, edges, shortest paths, spanning tree, reachability events),
`subnets` (subnet parsing, formatting and lookup) and `graph_dot` (control-socket dump lines
and the CLI's `dump` output). Nothing here touches sockets, files, the clock or randomness.
"""
