"""Signed firmware images and the A/B upgrade (issue 6, item 5).

image.py   the image format: build, verify (streaming), trusted keys, architectures
slots.py   the A/B layout under a root directory, its state file and recovery
health.py  the post-upgrade health check over the control socket
upgrade.py the upgrade procedure: verify, write, switch, start, check, commit or roll back
cli.py     `tincapp image ...` and `tincapp upgrade ...`
"""
