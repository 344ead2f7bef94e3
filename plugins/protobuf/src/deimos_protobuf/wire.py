"""The Confluent Protobuf framing: ``0x00``, 4-byte big-endian schema id, the message-index
list, then the protobuf binary.

The message-index list says which message of the registered ``.proto`` file the bytes hold:
the path of indexes from the file's top-level messages down through nested ones (``[0]`` for
the first top-level message, ``[1, 0]`` for the first message nested in the second). It is
written as a zigzag varint count followed by zigzag varint indexes, with the common ``[0]``
shortened to the single byte ``0x00``.

confluent-kafka implements this only in private helpers (``_create_index_array``,
``ProtobufSerializer._encode_varints``, ``SchemaId._read_index_array``), which may change in
any release, so deimos implements the few lines itself; the wire-compatibility tests check the
bytes against confluent-kafka's serializer and deserializer both ways.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor

from deimos.errors import DecodeError

MAGIC = 0


def message_indexes(desc: Descriptor) -> list[int]:
    """The index path of ``desc`` within its file."""
    path: list[int] = []
    current = desc
    while current.containing_type is not None:
        parent = current.containing_type
        path.append(list(parent.nested_types).index(current))
        current = parent
    top = list(current.file.message_types_by_name.values())
    path.append([d.full_name for d in top].index(current.full_name))
    path.reverse()
    return path


def _zigzag_varint(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_indexes(indexes: list[int]) -> bytes:
    """The message-index list as it goes on the wire."""
    if indexes == [0]:
        return b"\x00"
    return _zigzag_varint(len(indexes)) + b"".join(_zigzag_varint(i) for i in indexes)


def header(schema_id: int, indexes: list[int]) -> bytes:
    """Everything before the protobuf binary of one message (built once per schema)."""
    return b"\x00" + schema_id.to_bytes(4, "big") + encode_indexes(indexes)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    return (result >> 1) ^ -(result & 1), pos


def parse(data: bytes, what: str) -> tuple[int, tuple[int, ...], int]:
    """``(schema id, message indexes, offset of the protobuf binary)`` of one message;
    raises :class:`DecodeError` (``what`` names the role and topic) when the framing is not
    Confluent's."""
    if len(data) < 6 or data[0] != MAGIC:
        raise DecodeError(f"{what} is not in the Confluent Protobuf wire format (magic byte 0, "
                          f"4-byte schema id, message indexes); first bytes: {data[:6]!r}")
    sid = int.from_bytes(data[1:5], "big")
    if data[5] == 0:
        return sid, (0,), 6
    try:
        count, pos = _read_varint(data, 5)
        if count < 0 or count > 64:
            raise ValueError(f"implausible message-index count {count}")
        indexes = []
        for _ in range(count):
            i, pos = _read_varint(data, pos)
            indexes.append(i)
    except ValueError as exc:
        raise DecodeError(f"{what}: bad message-index list after schema id {sid}: {exc}"
                          ) from None
    return sid, tuple(indexes), pos
