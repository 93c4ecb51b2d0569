"""The project's typed errors. Everything a peer or a file can make us fail on is one of these."""


class TincappError(Exception):
    """Base class of every error tincapp raises on purpose."""


class SodiumLoadError(TincappError):
    """libsodium (PyNaCl's bundled copy) or one of its symbols could not be found."""


class WireError(TincappError):
    """Bytes from the network do not parse: raised by deep parsers, converted at the core."""


class SptpsError(TincappError):
    """An SPTPS session refused input or output; the session stays in a defined state."""


class DecryptError(SptpsError):
    """A record failed authentication (tinc: "Failed to decrypt and verify ...")."""


class ReplayError(SptpsError):
    """A datagram was authentic but late, replayed, or (future) too far ahead of the window."""

    def __init__(self, message, future=False):
        super().__init__(message)
        self.future = future


class HandshakeOrderError(ReplayError):
    """A plaintext handshake datagram arrived out of order (tinc: "Invalid packet seqno")."""


class HandshakeError(SptpsError):
    """A handshake record was malformed, unexpected or carried a bad signature."""


class SequenceExhaustedError(SptpsError):
    """Sending would reuse a nonce under the current key: a rekey must finish first."""


class KeyFileError(TincappError):
    """A key file or key string is malformed, of the wrong length or unreadable."""


class RemoteProtocolError(TincappError):
    """A peer broke the protocol; names the peer and the reason."""

    def __init__(self, peer, reason):
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason


class Base64Error(KeyFileError):
    """Text is not tinc base64 (a character outside both alphabets)."""


class ConfigError(TincappError):
    """A configuration file, command-line option or value is unusable.

    file is the path (None for a -o command-line option or when no file is involved), line the
    1-based line number (for -o options: the option's position, as tinc counts them) or None.
    """

    def __init__(self, message, file=None, line=None):
        self.reason = message
        self.file = None if file is None else str(file)
        self.line = line
        if self.file is not None:
            where = self.file if line is None else f"{self.file}:{line}"
        elif line is not None:
            where = f"command line option -o #{line}"
        else:
            where = None
        super().__init__(f"{where}: {message}" if where else message)
