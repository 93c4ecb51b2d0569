"""SPTPS wire format: record types, handshake layouts and sizes (spec/sptps.md 3-4).

Constants only; the record cipher and framing live in pyx/record.pyx (tincapp.accel.record).
"""

SPTPS_VERSION = 0

# Record types: 0..127 carry application data; 128 is a handshake record. tinc defines 129
# (alert) and 130 (close) but rejects every type above 128 on receipt.
APPLICATION_TYPE_MAX = 127
HANDSHAKE = 128

#  KEX body (65 bytes):
#  +---------+-----------+---------------+
#  | version | nonce:32  | ecdh_pub:32   |    ecdh_pub is an Ed25519 point (Edwards y)
#  +---------+-----------+---------------+
KEX_VERSION_OFFSET = 0
KEX_NONCE_OFFSET = 1
KEX_NONCE_LEN = 32
KEX_ECDH_OFFSET = 33
ECDH_PUBLIC_LEN = 32
KEX_LEN = 1 + KEX_NONCE_LEN + ECDH_PUBLIC_LEN

SIG_LEN = 64          # Ed25519 signature over flag || signer KEX || peer KEX || label
ACK_LEN = 0

KEY_LEN = 64          # one direction's key; only the first 32 bytes key ChaCha20
KEY_MATERIAL_LEN = 2 * KEY_LEN
# PRF output: key0 = [0:64] protects responder -> initiator, key1 = [64:128] the reverse.
KEY_EXPANSION = b"key expansion"

#  stream record:    len:2 | type:1 | data      (+16-byte tag once encrypted; len = data only)
#  datagram record:  seqno:4 | type:1 | data    (+16-byte tag once encrypted)
STREAM_HEADER_LEN = 2
DATAGRAM_HEADER_LEN = 4
TAG_LEN = 16
STREAM_PLAIN_OVERHEAD = STREAM_HEADER_LEN + 1
DATAGRAM_PLAIN_OVERHEAD = DATAGRAM_HEADER_LEN + 1
STREAM_OVERHEAD = STREAM_PLAIN_OVERHEAD + TAG_LEN           # 19
DATAGRAM_OVERHEAD = DATAGRAM_PLAIN_OVERHEAD + TAG_LEN       # 21, tinc's SPTPS_DATAGRAM_OVERHEAD
MAX_RECORD_DATA = 65535   # the length field (stream) and tinc's uint16_t len (both modes)

SEQNO_MODULUS = 1 << 32

# Labels tinc uses (spec/sptps.md 4.4). TCP and UDP labels carry a trailing NUL byte.
SPTPS_TEST_LABEL = b"sptps_test"
INVITATION_LABEL = b"tinc invitation"


def meta_label(initiator_name, responder_name):
    """Label of a meta connection: the connecting node is the initiator."""
    return f"tinc TCP key expansion {initiator_name} {responder_name}".encode() + b"\0"


def udp_label(initiator_name, responder_name):
    """Label of a UDP tunnel: the node that sent the REQ_KEY is the initiator."""
    return f"tinc UDP key expansion {initiator_name} {responder_name}".encode() + b"\0"
