"""tinc's configuration file syntax (src/conf.c): text to entries, and tinc's lookup order.

Owns: turning tinc.conf, conf.d/*.conf, hosts files and `-o [HOST.]VAR=VALUE` options into
Entry tuples exactly as tinc reads them, the list of files that make up the server
configuration, and the order in which tinc looks entries up (ConfigTree). Does not know what a
variable means or whether it exists (variables.py) nor where the network directory is
(netconf.py). Its only I/O is reading files and listing conf.d. Every error is a ConfigError
naming the file and line. Files encrypted at rest are decrypted through secrets.py when a key
is given (key: a secrets.KeySource, key bytes or None); plain files read the same either way.

Text model: files are read as bytes and decoded as latin-1, so every byte is one character
(as in tinc's C strings) and no input can raise UnicodeDecodeError.
"""
import os
from dataclasses import dataclass

from tincapp.config import secrets
from tincapp.errors import ConfigError

# COMPAT: tinc reads lines with fgets() into a MAX_STRING_SIZE (2049) buffer: at most 2048
# bytes per read, newline included.
MAX_LINE_LEN = 2048

# tinc compares variable names with strcasecmp: ASCII case only. str.lower() would also fold
# e.g. the Kelvin sign to 'k'.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """text with only A-Z folded, as strcasecmp compares."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Entry:
    """One `Variable = Value` statement.

    file is the path as tinc would name it (confbase + "/tinc.conf", ...) or None for a
    command-line option; line is the 1-based line number, or the option's position for -o.
    name is spelled as written; compare names with `key`.
    """
    name: str
    value: str
    file: str | None
    line: int

    @property
    def key(self) -> str:
        return ascii_lower(self.name)

    @property
    def where(self) -> str:
        if self.file is None:
            return f"command line option -o #{self.line}"
        return f"{self.file}:{self.line}"

    def error(self, message: str) -> ConfigError:
        """A ConfigError about this entry, naming its file and line."""
        return ConfigError(message, self.file, self.line)


def parse_line(line: str, file: str | None, lineno: int) -> Entry:
    """tinc's parse_config_line() on one line whose newline is already removed.

    The name ends at the first space, tab or '='; then spaces/tabs, one optional '=',
    spaces/tabs; the rest minus trailing spaces/tabs is the value.
    """
    line = line.rstrip("\t ")
    name_len = len(line)
    for i, ch in enumerate(line):
        if ch in "\t =":
            name_len = i
            break
    name = line[:name_len]
    value = line[name_len:].lstrip("\t ")
    if value.startswith("="):
        value = value[1:].lstrip("\t ")
    if not value:
        if not line:
            # COMPAT: tinc has no special case for a line of only spaces/tabs: it is a
            # variable without a name and without a value, an error that stops the file.
            raise ConfigError("line contains only spaces or tabs (tinc rejects it: "
                              "no variable and no value)", file, lineno)
        raise ConfigError(f"no value for variable '{name}'", file, lineno)
    return Entry(name, value, None if file is None else str(file), lineno)


def _physical_lines(text: str):
    """(line without its newline, has_newline) as fgets() would deliver them."""
    parts = text.split("\n")
    for part in parts[:-1]:
        yield part, True
    if parts[-1]:
        yield parts[-1], False


def parse_text(text: str, file: str) -> tuple[Entry, ...]:
    """The entries of one configuration file's text, with tinc's read_config_file() rules.

    Comments are lines whose first character is '#'; empty lines are skipped; a line starting
    with "-----BEGIN" starts a block skipped up to a line starting with "-----END".
    """
    entries = []
    in_pem = False
    for lineno, (line, has_newline) in enumerate(_physical_lines(text), 1):
        if len(line) + has_newline > MAX_LINE_LEN:
            # DEVIATION: tinc cuts such a line into 2048-byte pieces and parses each piece as
            # a line of its own (so the tail of a long value becomes a bogus variable).
            raise ConfigError(f"line is {len(line)} characters long; tinc reads at most "
                              f"{MAX_LINE_LEN} including the newline", file, lineno)
        nul = line.find("\0")
        if nul != -1:
            # COMPAT: the line is a C string: it ends at the first NUL byte (and readline()
            # then does not find the newline, so no '\r' is removed).
            line = line[:nul]
        elif line.endswith("\r"):
            # COMPAT: readline() removes one '\r' before the newline.
            # DEVIATION: tinc keeps a '\r' on a last line that has no newline (the value then
            # ends in '\r'); it is removed here too.
            line = line[:-1]
        # COMPAT: only '#' in column 0 starts a comment; "  # x" is a variable named "".
        if not line or line[0] == "#":
            continue
        # COMPAT: PEM blocks (keys inside hosts files) are skipped, BEGIN and END lines
        # included; the END line is looked for only after a BEGIN line, and a block left open
        # at the end of the file is not an error.
        if in_pem:
            if line.startswith("-----END"):
                in_pem = False
            continue
        if line.startswith("-----BEGIN"):
            in_pem = True
            continue
        entries.append(parse_line(line, file, lineno))
    return tuple(entries)


def parse_bytes(data: bytes, file: str) -> tuple[Entry, ...]:
    return parse_text(bytes(data).decode("latin-1"), file)


def read_file(path, key=None) -> tuple[Entry, ...]:
    """The entries of one configuration file, plain or encrypted; ConfigError if it cannot be
    read (secrets.SecretsError for an encrypted file that does not open)."""
    path = os.fspath(path)
    try:
        data = secrets.read_bytes(path, key)
    except FileNotFoundError as e:
        raise ConfigError("cannot open config file: no such file", path) from e
    except IsADirectoryError as e:
        raise ConfigError("cannot read config file: it is a directory", path) from e
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror or e}", path) from e
    return parse_bytes(data, path)


def server_file_names(confbase: str) -> list[str]:
    """tinc.conf, then every conf.d/*.conf, as tinc's read_server_config() names them.

    COMPAT: a conf.d entry counts if its name is longer than ".conf" and ends in ".conf"
    (hidden files and directories included; a directory then fails to read, as in tinc).
    tinc takes conf.d in readdir() order; entries are looked up by line number and file name
    (ConfigTree), never by reading order, so sorting here changes only which of two broken
    files is reported first.
    """
    names = [f"{confbase}/tinc.conf"]
    conf_d = f"{confbase}/conf.d"
    try:
        listing = os.listdir(conf_d)
    except FileNotFoundError:
        return names
    except OSError as e:
        # DEVIATION: tinc silently skips a conf.d it cannot open (permissions, not a
        # directory), which would start the daemon without part of its configuration.
        raise ConfigError(f"cannot list configuration directory: {e.strerror or e}",
                          conf_d) from e
    found = [n for n in listing if len(n) > 5 and n.endswith(".conf")]
    found.sort(key=os.fsencode)
    names.extend(f"{conf_d}/{n}" for n in found)
    return names


def read_server_files(confbase: str, key=None) -> tuple[Entry, ...]:
    """Entries of tinc.conf and conf.d/*.conf (tinc's read_server_config() minus -o)."""
    entries = []
    for name in server_file_names(confbase):
        entries.extend(read_file(name, key))
    return tuple(entries)


def host_file_name(confbase: str, name: str) -> str:
    """hosts/NAME as tinc names it (the name is not checked here)."""
    return f"{confbase}/hosts/{name}"


def parse_options(args) -> tuple[Entry, ...]:
    """tincd's -o arguments ("VAR=VALUE", "VAR VALUE", "HOST.VAR=VALUE"), in order.

    COMPAT: each is parsed like a config line (no comment or PEM handling) and numbered 1, 2,
    ... in command-line order; that number is the entry's line (lower wins).
    """
    return tuple(parse_line(arg, None, i) for i, arg in enumerate(args, 1))


def options_for(options, host: str | None = None) -> tuple[Entry, ...]:
    """tinc's read_config_options(): the -o entries for the own config or for one host.

    host None: options without a '.' in the name. host NAME: options named "NAME.VAR"
    (the node name compared case-sensitively, as tinc's strncmp), renamed to "VAR".
    """
    out = []
    for entry in options:
        if host is None:
            if "." not in entry.name:
                out.append(entry)
        elif entry.name.startswith(host + "."):
            out.append(Entry(entry.name[len(host) + 1:], entry.value, None, entry.line))
    return tuple(out)


def _order(entry: Entry):
    # COMPAT: tinc's config_compare(): name (case-insensitive), command line first, then line
    # number, then file name (strcmp, so byte order). The line number beats the file: a
    # variable on line 2 of hosts/ME wins over the same variable on line 5 of tinc.conf.
    if entry.file is None:
        return (entry.key, 0, entry.line, b"")
    return (entry.key, 1, entry.line, os.fsencode(entry.file))


class ConfigTree:
    """tinc's config_tree: entries in lookup order. Immutable once built.

    lookup() gives what tinc's lookup_config() gives (the entry a single-valued variable
    takes), lookup_all() what walking lookup_config_next() gives.
    """

    def __init__(self, entries=()):
        self._entries = tuple(sorted(entries, key=_order))
        groups: dict[str, list[Entry]] = {}
        for entry in self._entries:
            groups.setdefault(entry.key, []).append(entry)
        self._groups = {k: tuple(v) for k, v in groups.items()}

    def lookup(self, name: str) -> Entry | None:
        group = self._groups.get(ascii_lower(name))
        return group[0] if group else None

    def lookup_all(self, name: str) -> tuple[Entry, ...]:
        return self._groups.get(ascii_lower(name), ())

    def keys(self):
        """The distinct variable names present, lowercased."""
        return self._groups.keys()

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"ConfigTree({len(self._entries)} entries)"


def format_line(name: str, value: str) -> str:
    """The line `name = value` with its newline, such that parse_text() gives them back.

    ValueError if no line can carry them: a name must be non-empty without spaces, tabs,
    '=', line breaks or NUL, must not start with '#' (comment) or "-----BEGIN" (PEM block);
    a value must be non-empty, without line breaks or NUL, not start with a space or tab, not
    end with a space, tab or '\\r'. Characters stand for bytes (latin-1).
    """
    if not name or any(ch in "\t =\n\r\0" for ch in name) or name[0] == "#" \
            or name.startswith("-----BEGIN"):
        raise ValueError(f"cannot write a variable named {name!r}")
    if not value or any(ch in "\n\0" for ch in value) or value[0] in "\t " \
            or value[-1] in "\t \r":
        raise ValueError(f"cannot write the value {value!r} on a config line")
    line = f"{name} = {value}\n"
    if any(ord(ch) > 0xFF for ch in line):
        raise ValueError("config lines are bytes: characters above U+00FF cannot be written")
    if len(line) > MAX_LINE_LEN:
        raise ValueError(f"line would be longer than {MAX_LINE_LEN} characters")
    return line
