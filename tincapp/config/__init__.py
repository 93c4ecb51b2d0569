"""tinc.conf, conf.d and hosts/ files -> frozen configuration objects (spec keys-and-files.md).

parse.py: the file syntax and tinc's lookup order. variables.py: the variable table and value
syntaxes. netconf.py: the network directory, paths, and the DaemonConfig / HostConfig the
daemon is given. No sockets; nothing here acts on the configuration.
"""
from tincapp.config.netconf import (DaemonConfig, HostConfig, NetworkPaths, host_names,
                                    load_host_config, load_network, resolve_paths)
from tincapp.config.parse import ConfigTree, Entry
from tincapp.config.variables import Address, Proxy, parse_subnet

__all__ = [
    "Address", "ConfigTree", "DaemonConfig", "Entry", "HostConfig", "NetworkPaths", "Proxy",
    "host_names", "load_host_config", "load_network", "parse_subnet", "resolve_paths",
]
