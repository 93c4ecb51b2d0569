"""The `tinc` command line (spec control-and-cli.md 4), behaving and printing like tinc 1.1's
tincctl.c.

common.py: global options, paths, errors, atomic file writes. offline.py: commands that only
touch files (init, get/set/add/del, export/import, keys, sign/verify, network, fsck).
ctlclient.py: the control-socket client. online.py: commands that talk to a running daemon.
invite.py: invite and edit. join.py: join (the invitation client). commands.py: the command
table, the interactive shell and main(). This package does I/O (files, sockets,
processes); protocol formats come from tincapp.control and tincapp.mesh.graph_dot.
"""
