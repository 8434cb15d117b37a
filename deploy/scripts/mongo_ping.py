#!/usr/bin/env python3
"""Sends {ping: 1} to a MongoDB wire-protocol server (OP_MSG) and exits 0 if it answers ok: 1.

Standard library only, so no driver needs installing. usage: mongo_ping.py HOST PORT
"""
import socket
import struct
import sys

OP_MSG = 2013


def bson_ping() -> bytes:
    body = b"\x10ping\x00" + struct.pack("<i", 1)
    db = b"admin\x00"
    body += b"\x02$db\x00" + struct.pack("<i", len(db)) + db
    return struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    payload = struct.pack("<I", 0) + b"\x00" + bson_ping()  # flagBits, section kind 0, doc
    header = struct.pack("<iiii", 16 + len(payload), 1, 0, OP_MSG)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(header + payload)
        length, _, _, opcode = struct.unpack("<iiii", recv_exact(sock, 16))
        reply = recv_exact(sock, length - 16)
    if opcode != OP_MSG:
        return 1
    # {ok: 1.0} is a double element: type 0x01, name "ok".
    i = reply.find(b"\x01ok\x00")
    return 0 if i >= 0 and struct.unpack("<d", reply[i + 4:i + 12])[0] == 1.0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, struct.error) as err:
        print(f"mongo ping failed: {err}", file=sys.stderr)
        sys.exit(1)
