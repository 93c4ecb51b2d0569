"""tincapp: a mesh VPN daemon that speaks tinc 1.1's protocol."""
from tincapp.version import __version__

__all__ = ["__version__"]
